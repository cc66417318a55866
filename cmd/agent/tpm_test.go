//go:build !windows

package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// TestKeygenTPM: keygen --tpm makes a key inside the TPM: the file (0600,
// never overwritten) is a TSS2 PRIVATE KEY PEM and the printed line is
// ecdsa-p256: + the 65-byte point of that key.
func TestKeygenTPM(t *testing.T) {
	tpm := swtpm.Start(t)
	key := filepath.Join(t.TempDir(), "agent.key")
	code, out, errs := runCLI(t, nil, "keygen", "--tpm", "--tpm-device", tpm.Socket, "--out", key)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	line := strings.TrimSpace(out)
	if !strings.HasPrefix(line, "ecdsa-p256:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q is not one ecdsa-p256 line", out)
	}
	if _, err := agentkey.ParsePublicKey(line); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(key)
	if b, _ := pem.Decode(data); b == nil || b.Type != tpmkey.PEMType {
		t.Fatalf("key file is not a TSS2 PRIVATE KEY:\n%s", data)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	k, err := keys.Load(key, tpm.Socket)
	if err != nil || k.Kind != keys.KindTPM || k.Public != line {
		t.Fatalf("loaded %+v, %v", k, err)
	}
	if code, _, errs := runCLI(t, nil, "keygen", "--tpm", "--tpm-device", tpm.Socket, "--out", key); code == 0 ||
		!strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("overwrite: %d %s", code, errs)
	}
	// The device from AGENT_TPM_DEVICE.
	key2 := filepath.Join(t.TempDir(), "agent.key")
	if code, _, errs := runCLI(t, map[string]string{"AGENT_TPM_DEVICE": tpm.Socket}, "keygen", "--tpm", "--out", key2); code != 0 {
		t.Errorf("keygen with AGENT_TPM_DEVICE: %d %s", code, errs)
	}
	// --tpm-device alone is a usage error; no TPM there is a failure naming it.
	if code, _, _ := runCLI(t, nil, "keygen", "--tpm-device", tpm.Socket, "--out", key+"3"); code != exitUsage {
		t.Errorf("--tpm-device without --tpm: %d", code)
	}
	missing := filepath.Join(t.TempDir(), "no-tpm")
	if code, _, errs := runCLI(t, nil, "keygen", "--tpm", "--tpm-device", missing, "--out", key+"4"); code != exitFailure ||
		!strings.Contains(errs, missing) {
		t.Errorf("no TPM: %d %s", code, errs)
	}
	if _, err := os.Stat(key + "4"); err == nil {
		t.Error("a key file was left behind after the TPM failed")
	}
}

// TestEnrolTPM: enrol --tpm creates Broker.KeyFile inside the TPM of
// Broker.TpmDevice and prints the ecdsa-p256 entry; run again it reuses it.
func TestEnrolTPM(t *testing.T) {
	tpm := swtpm.Start(t)
	cfg, key := enrolConfig(t, func(doc map[string]any) { doc["Broker"].(map[string]any)["TpmDevice"] = tpm.Socket })
	code, out, errs := runEnrolCLI(t, nil, "enrol", "--tpm", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	e := parseEnrolment(t, out)
	k, err := keys.Load(key, tpm.Socket)
	if err != nil || k.Kind != keys.KindTPM || e.hclPubKey != k.Public || e.policy["clinic-a"].PublicKey != k.Public {
		t.Fatalf("enrolment %+v, key %+v %v", e, k, err)
	}
	code, out2, errs := runEnrolCLI(t, nil, "enrol", "--config", cfg)
	if code != 0 || out2 != strings.Replace(out, "created now", "already there, reused", 1) {
		t.Fatalf("second run: %d %s\n%s", code, errs, out2)
	}
	// --tpm-device wins over the configuration: with another TPM the key
	// cannot be used, and enrol says so.
	other := swtpm.Start(t)
	code, _, errs = runEnrolCLI(t, nil, "enrol", "--tpm-device", other.Socket, "--config", cfg)
	if code != exitFailure || !strings.Contains(errs, "cannot sign with this key") {
		t.Fatalf("other TPM: %d %s", code, errs)
	}
}

// TestOnceTPMAgainstBroker: "agent once" with a TPM key (swtpm) against
// the real broker (in process, on the Google fakes), whose policy holds
// the agent's ecdsa-p256: line: the broker verifies the ES256 assertions
// and mints a token that the agent pushes to Orthanc. Then "run": agent
// status and /metrics say the key is a TPM key. Last, the key file with
// another TPM is refused.
func TestOnceTPMAgainstBroker(t *testing.T) {
	const (
		project     = "tpm-test"
		brokerEmail = "broker@tpm-test.iam.gserviceaccount.com"
		keylessSA   = "store-k@tpm-test.iam.gserviceaccount.com"
	)
	tpm := swtpm.Start(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "agent.key")
	code, out, errs := runCLI(t, nil, "keygen", "--tpm", "--tpm-device", tpm.Socket, "--out", key)
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	pubLine := strings.TrimSpace(out)

	t.Setenv("HOME", t.TempDir()) // no gcloud ADC file: the broker's identity comes from metadata
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	cloud, err := fakegcp.StartCloud(brokerEmail, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cloud.Close)
	t.Setenv("GCE_METADATA_HOST", cloud.Metadata.Host())
	cloud.IAM.AllowCaller(brokerEmail, keylessSA)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	brokerURL := "http://" + lis.Addr().String()
	policy := map[string]any{
		"Audience": brokerURL,
		"BaseUrl":  cloud.DICOMweb.URL() + "/v1/",
		"Accounts": map[string]any{"keyless": map[string]any{"Project": project, "Location": "europe-west2", "Dataset": "ds",
			"DicomStore": "k", "ImpersonateServiceAccount": keylessSA}},
		"Agents": map[string]any{"clinic-a": map[string]any{"PublicKey": pubLine, "Accounts": []string{"keyless"}}},
	}
	policyPath := filepath.Join(dir, "policy.json")
	data, _ := json.Marshal(policy)
	if err := os.WriteFile(policyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var brokerLogs logcapture.Buffer
	b, err := broker.New(context.Background(), broker.Config{
		PolicyRef: policyPath, Refresh: time.Hour, RateLimit: 1000, RateBurst: 1000,
		IAMCredentialsEndpoint: cloud.IAM.URL(), Log: cloudlog.New(&brokerLogs, slog.LevelDebug),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close(); b.Close() })

	orth := agenttest.NewOrthanc(t, "", "")
	front, _ := url.Parse(cloud.DICOMweb.URL())
	cfg := filepath.Join(dir, "agent.json")
	doc := map[string]any{
		"Broker":               map[string]any{"Url": brokerURL, "AgentId": "clinic-a", "KeyFile": key, "TpmDevice": tpm.Socket, "Timeout": "10s"},
		"Orthanc":              map[string]any{"Url": orth.URL},
		"Accounts":             []string{"keyless"},
		"Listen":               "",
		"AllowedDicomWebHosts": []string{front.Host},
		"ResubmitFailedJobs":   false,
	}
	data, _ = json.Marshal(doc)
	os.WriteFile(cfg, data, 0o640)

	code, _, errs = runCLI(t, nil, "once", "--config", cfg)
	if code != 0 {
		t.Fatalf("once: exit %d\n%s\nbroker:\n%s", code, errs, brokerLogs.String())
	}
	tok := orth.Bearer("keyless")
	if tok == "" {
		t.Fatalf("no token pushed: %v", orth.Entry("keyless"))
	}
	if strings.Contains(errs, tok) {
		t.Fatal("the token is in the agent's output")
	}
	if strings.Contains(brokerLogs.String(), "agent authentication failed") {
		t.Fatalf("the broker refused an assertion:\n%s", brokerLogs.String())
	}

	// "run": agent status and /metrics show a TPM key.
	var logs logcapture.Buffer
	addrCh := make(chan string, 1)
	c := &cli{stdout: &logs, stderr: &logs, env: func(k string) (string, bool) {
		if k == "AGENT_LISTEN" {
			return "127.0.0.1:0", true
		}
		return "", false
	}, onListen: func(a string) { addrCh <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- c.main(ctx, []string{"run", "--config", cfg}) }()
	var addr string
	select {
	case addr = <-addrCh:
	case code := <-done:
		t.Fatalf("run exited %d: %s", code, logs.String())
	}
	waitHealthy(t, addr)
	code, sout, serr := runCLI(t, nil, "status", "--addr", addr)
	if code != 0 || !strings.Contains(sout, "; key tpm\n") {
		t.Errorf("status: %d %s %s", code, sout, serr)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `orthanc_gcp_agent_key_info{kind="tpm"} 1`) {
		t.Errorf("/metrics lacks the TPM key kind")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("run: exit %d\n%s", code, logs.String())
	}
	if !strings.Contains(logs.String(), `"key_kind":"tpm"`) {
		t.Errorf("the start line does not name the key kind:\n%s", logs.String())
	}

	// Rotation against the real broker: rotate-key makes the next TPM key;
	// while the policy lists only the old key the agent keeps working with
	// it; once the policy lists both (PublicKeys), the agent adopts the new
	// one; then the policy drops the old one and nothing fails.
	code, _, errs = runCLI(t, nil, "rotate-key", "--config", cfg)
	if code != 0 {
		t.Fatalf("rotate-key: %d %s", code, errs)
	}
	next, err := keys.Load(keys.NextPath(key), tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	newLine, err := agentkey.FormatPublic(next.Signer.Public())
	if err != nil || !strings.HasPrefix(newLine, agentkey.PrefixECDSAP256) || newLine == pubLine {
		t.Fatalf("next key line %q (%v)", newLine, err)
	}
	setKeys := func(field string, v any) {
		ag := policy["Agents"].(map[string]any)["clinic-a"].(map[string]any)
		delete(ag, "PublicKey")
		delete(ag, "PublicKeys")
		ag[field] = v
		data, _ := json.Marshal(policy)
		if err := os.WriteFile(policyPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := b.Reload(context.Background()); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	if code, _, errs := runCLI(t, nil, "once", "--config", cfg); code != 0 {
		t.Fatalf("once before the new key is registered: %d %s", code, errs)
	}
	if _, err := os.Stat(keys.NextPath(key)); err != nil {
		t.Fatal("the next key was adopted before the broker knew it")
	}
	setKeys("PublicKeys", []string{pubLine, newLine})
	code, out, errs = runCLI(t, nil, "once", "--config", cfg)
	if code != 0 {
		t.Fatalf("once with both keys registered: %d %s", code, errs)
	}
	if _, err := os.Stat(keys.NextPath(key)); !os.IsNotExist(err) {
		t.Fatalf("the next key was not adopted: %v\n%s", err, errs)
	}
	if !strings.Contains(out+errs, "agent key rotated") || !strings.Contains(out+errs, newLine) {
		t.Errorf("no rotation report naming the new key:\n%s\n%s", out, errs)
	}
	setKeys("PublicKey", newLine)
	if code, _, errs := runCLI(t, nil, "once", "--config", cfg); code != 0 {
		t.Fatalf("once with only the new key registered: %d %s", code, errs)
	}

	// The key file on another TPM (copied to another host): the agent does
	// not start, and says why.
	other := swtpm.Start(t)
	code, _, errs = runCLI(t, map[string]string{"AGENT_TPM_DEVICE": other.Socket}, "once", "--config", cfg)
	if code != exitFailure || !strings.Contains(errs, "Broker.KeyFile") || !strings.Contains(errs, "cannot sign with this key") {
		t.Fatalf("on another TPM: exit %d\n%s", code, errs)
	}
}
