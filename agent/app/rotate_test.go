//go:build !windows

package app

import (
	"context"
	"crypto"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// TestKeyRotation, for each kind of key: with a next key at KeyFile.next,
// a broker that accepts only the old key, then both, then only the new one
// never fails a sync; the agent adopts the next key as soon as the broker
// accepts it (the file renamed over KeyFile, "agent key rotated" logged with
// the entry holding only the new key) and signs everything with it after.
func TestKeyRotation(t *testing.T) {
	for _, kind := range []string{keys.KindFile, keys.KindTPM} {
		t.Run(kind, func(t *testing.T) { testKeyRotation(t, kind) })
	}
}

func testKeyRotation(t *testing.T, kind string) {
	device := ""
	if kind == keys.KindTPM {
		device = swtpm.Start(t).Socket
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "agent.key")
	old, err := keys.Create(keyFile, kind, device)
	if err != nil {
		t.Fatal(err)
	}
	clock := agenttest.NewClock(time.Now().Truncate(time.Second))
	oldPub := old.Signer.Public()
	broker := agenttest.NewBroker(t, "clinic-a", oldPub)
	broker.Set(func(b *agenttest.Broker) {
		b.Now = clock.Now
		b.Grants = map[string]string{"store-a": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/"}
	})
	orth := agenttest.NewOrthanc(t, "", "")
	cfg := &config.Config{
		BrokerURL: broker.URL, AgentID: "clinic-a", KeyFile: keyFile, Key: old.Signer, KeyKind: old.Kind, KeyPublic: old.Public,
		TpmDevice: device, BrokerTimeout: config.DefaultBrokerTimeout, Accounts: []string{"store-a"},
		OrthancURL: orth.URL, DicomWebRoot: config.DefaultDicomWebRoot,
		RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
		StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
	}
	logs := &logcapture.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sync := func(step string) {
		t.Helper()
		clock.Advance(55 * time.Minute) // every sync asks for the stores and a token
		if err := a.Once(ctx); err != nil {
			t.Fatalf("%s: sync failed: %v", step, err)
		}
	}
	sync("before the rotation")

	// rotate-key: the next key, of the same kind.
	next, err := keys.Create(keys.NextPath(keyFile), kind, device)
	if err != nil {
		t.Fatal(err)
	}
	nextPEM, _ := os.ReadFile(keys.NextPath(keyFile))
	oldPEM, _ := os.ReadFile(keyFile)
	broker.Set(func(b *agenttest.Broker) {
		b.KnownKeys[old.Public] = oldPub
		b.KnownKeys[next.Public] = next.Signer.Public()
	})

	// 1. The broker knows only the old key: each sync tries the next key,
	// is refused, and succeeds with the old one.
	sync("old key only")
	sync("old key only, again")
	broker.Set(func(b *agenttest.Broker) {
		if b.RefusedKeys[next.Public] != 2 || b.RefusedKeys[old.Public] != 0 {
			t.Errorf("refused by key: %v, want the next key twice", b.RefusedKeys)
		}
	})
	if got, _ := os.ReadFile(keyFile); string(got) != string(oldPEM) {
		t.Fatal("the key file changed before the broker accepted the next key")
	}
	if a.RotatedKey() != nil || a.KeyKind() != kind {
		t.Fatal("rotated before the broker accepted the next key")
	}

	// 2. Both keys registered: the next store poll adopts the next key.
	broker.Set(func(b *agenttest.Broker) { b.Keys = []crypto.PublicKey{oldPub, next.Signer.Public()} })
	sync("both keys")
	if _, err := os.Stat(keys.NextPath(keyFile)); !os.IsNotExist(err) {
		t.Fatalf("the next key file is still there: %v", err)
	}
	if got, _ := os.ReadFile(keyFile); string(got) != string(nextPEM) {
		t.Fatal("the key file is not the former next key")
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	if k := a.RotatedKey(); k == nil || k.Public != next.Public {
		t.Fatalf("RotatedKey = %+v", k)
	}
	if k, err := keys.Load(keyFile, device); err != nil || k.Public != next.Public {
		t.Fatalf("the key file does not load as the new key: %v", err)
	}
	var rotated struct {
		Msg, KeyFile, Kind, PublicKey, OldPublicKey, PolicyEntry string
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		var l map[string]string
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "agent key rotated" {
			rotated.Msg, rotated.KeyFile, rotated.Kind = l["msg"], l["key_file"], l["kind"]
			rotated.PublicKey, rotated.OldPublicKey, rotated.PolicyEntry = l["public_key"], l["old_public_key"], l["policy_entry"]
		}
	}
	wantEntry := `"clinic-a": {"PublicKey": "` + next.Public + `", "Accounts": ["store-a"]}`
	if rotated.Msg == "" || rotated.KeyFile != keyFile || rotated.Kind != kind || rotated.PublicKey != next.Public ||
		rotated.OldPublicKey != old.Public || rotated.PolicyEntry != wantEntry {
		t.Fatalf("rotation log %+v, want entry %s\n%s", rotated, wantEntry, logs.String())
	}

	// 3. The operator drops the old key: everything is signed with the new one.
	var acceptedOld int
	broker.Set(func(b *agenttest.Broker) {
		b.Keys = []crypto.PublicKey{next.Signer.Public()}
		acceptedOld = b.AcceptedKeys[old.Public]
	})
	sync("new key only")
	sync("new key only, again")
	broker.Set(func(b *agenttest.Broker) {
		if b.AcceptedKeys[old.Public] != acceptedOld || b.RefusedKeys[old.Public] != 0 {
			t.Errorf("the old key was used after the rotation: accepted %v, refused %v", b.AcceptedKeys, b.RefusedKeys)
		}
		if b.AcceptedKeys[next.Public] < 4 {
			t.Errorf("accepted by key: %v", b.AcceptedKeys)
		}
	})

	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`orthanc_gcp_agent_key_info{kind="` + kind + `"} 1`, `orthanc_gcp_agent_failures_total{reason="unauthenticated"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range [][]byte{oldPEM, nextPEM} {
		if strings.Contains(logs.String(), strings.Split(string(secret), "\n")[1]) {
			t.Fatal("key material in the logs")
		}
	}
}

// TestNextKeyUnusable: a next key file that cannot be used (not a key,
// readable by others) is logged and left alone; the agent keeps working
// with its key.
func TestNextKeyUnusable(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "agent.key")
	cur, err := keys.Create(keyFile, keys.KindFile, "")
	if err != nil {
		t.Fatal(err)
	}
	broker := agenttest.NewBroker(t, "clinic-a", cur.Signer.Public())
	broker.Set(func(b *agenttest.Broker) {
		b.Grants = map[string]string{"store-a": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/"}
	})
	orth := agenttest.NewOrthanc(t, "", "")
	cfg := &config.Config{
		BrokerURL: broker.URL, AgentID: "clinic-a", KeyFile: keyFile, Key: cur.Signer, KeyKind: cur.Kind, KeyPublic: cur.Public,
		BrokerTimeout: config.DefaultBrokerTimeout, OrthancURL: orth.URL, DicomWebRoot: config.DefaultDicomWebRoot,
		RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
		StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
	}
	logs := &logcapture.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	next := keys.NextPath(keyFile)
	os.WriteFile(next, []byte("half a key"), 0o600)
	for i := 0; i < 3; i++ {
		if err := a.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "the next agent key cannot be used"); n != 1 {
		t.Errorf("warned %d times about one unusable next key, want once:\n%s", n, logs.String())
	}
	// A good key, but readable by the group: refused like the key file.
	os.Remove(next)
	if _, err := agentkey.WriteNew(next); err != nil {
		t.Fatal(err)
	}
	os.Chmod(next, 0o640)
	if err := a.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "chmod 600") {
		t.Errorf("no warning about the next key's mode:\n%s", logs.String())
	}
	if _, err := os.Stat(next); err != nil || a.RotatedKey() != nil {
		t.Fatalf("an unusable next key was adopted: %v", err)
	}
}

// TestNextKeyFromFileToTPM: a TPM key put at KeyFile.next next to a file key
// (moving an agent to a TPM key) is adopted like a rotated key; while its
// TPM cannot be opened, the agent warns once, keeps its file key, and tries
// the next key again later (retryUnusableNext).
func TestNextKeyFromFileToTPM(t *testing.T) {
	tpm := swtpm.Start(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "agent.key")
	cur, err := keys.Create(keyFile, keys.KindFile, "")
	if err != nil {
		t.Fatal(err)
	}
	next, err := keys.Create(keys.NextPath(keyFile), keys.KindTPM, tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's TPM device is a link that does not exist yet.
	device := filepath.Join(dir, "tpm")
	broker := agenttest.NewBroker(t, "clinic-a", cur.Signer.Public())
	broker.Set(func(b *agenttest.Broker) {
		b.Keys = append(b.Keys, next.Signer.Public())
		b.Grants = map[string]string{"store-a": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/"}
	})
	orth := agenttest.NewOrthanc(t, "", "")
	cfg := &config.Config{
		BrokerURL: broker.URL, AgentID: "clinic-a", KeyFile: keyFile, Key: cur.Signer, KeyKind: cur.Kind, KeyPublic: cur.Public,
		TpmDevice: device, BrokerTimeout: config.DefaultBrokerTimeout, OrthancURL: orth.URL, DicomWebRoot: config.DefaultDicomWebRoot,
		RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
		StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
	}
	defer func(d time.Duration) { retryUnusableNext = d }(retryUnusableNext)
	retryUnusableNext = 0
	logs := &logcapture.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := a.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "the next agent key cannot be used"); n != 1 || !strings.Contains(logs.String(), "opening the TPM") {
		t.Fatalf("%d warnings about the next key, want 1 naming the TPM:\n%s", n, logs.String())
	}
	if a.RotatedKey() != nil || a.KeyKind() != keys.KindFile {
		t.Fatal("rotated to a key its TPM could not use")
	}
	// The TPM appears: the next poll adopts the TPM key.
	if err := os.Symlink(tpm.Socket, device); err != nil {
		t.Fatal(err)
	}
	if err := a.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k := a.RotatedKey(); k == nil || k.Public != next.Public || a.KeyKind() != keys.KindTPM {
		t.Fatalf("not rotated to the TPM key: %+v\n%s", k, logs.String())
	}
	if k, err := keys.Load(keyFile, device); err != nil || k.Kind != keys.KindTPM {
		t.Fatalf("key file after the move: %+v %v", k, err)
	}
}
