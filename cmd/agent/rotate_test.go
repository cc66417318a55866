//go:build !windows

package main

import (
	"crypto"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// rotationOutput is what rotate-key printed, parsed.
type rotationOutput struct {
	hclKeys []string
	policy  map[string]struct {
		PublicKey  string
		PublicKeys []string
		Accounts   []string
	}
}

func parseRotation(t *testing.T, out string) rotationOutput {
	t.Helper()
	var r rotationOutput
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "#") || l == "" || strings.HasPrefix(l, "  "):
			if v, ok := strings.CutPrefix(l, "    public_keys = "); ok {
				if err := json.Unmarshal([]byte(v), &r.hclKeys); err != nil {
					t.Fatalf("public_keys %q: %v", v, err)
				}
			}
			if v, ok := strings.CutPrefix(l, "    public_key = "); ok {
				r.hclKeys = []string{strings.Trim(v, `"`)}
			}
		default:
			if err := json.Unmarshal([]byte("{"+l+"}"), &r.policy); err != nil {
				t.Fatalf("policy line %q: %v\n%s", l, err, out)
			}
		}
	}
	return r
}

// TestRotateKey, for each kind: rotate-key makes Broker.KeyFile.next of the
// current key's kind (0600), prints the entry with both keys and, run
// again, reuses it. "once" against a broker that accepts only the old key
// keeps it; once the broker accepts both, "once" adopts the next key,
// logs "agent key rotated" and prints the entry with only the new key;
// with only the new key registered, "once" still succeeds.
func TestRotateKey(t *testing.T) {
	for _, kind := range []string{keys.KindFile, keys.KindTPM} {
		t.Run(kind, func(t *testing.T) { testRotateKey(t, kind) })
	}
}

func testRotateKey(t *testing.T, kind string) {
	orth := agenttest.NewOrthanc(t, "agent", "orthanc-pw")
	s := newSetup(t, orth.URL, "agent", "orthanc-pw", nil)
	if kind == keys.KindTPM {
		tpm := swtpm.Start(t)
		os.Remove(s.key)
		k, err := keys.Create(s.key, keys.KindTPM, tpm.Socket)
		if err != nil {
			t.Fatal(err)
		}
		s.broker.Set(func(b *agenttest.Broker) { b.Keys = []crypto.PublicKey{k.Signer.Public()} })
		s.env["AGENT_TPM_DEVICE"] = tpm.Socket
	}
	cur, err := keys.Load(s.key, s.env["AGENT_TPM_DEVICE"])
	if err != nil {
		t.Fatal(err)
	}
	next := keys.NextPath(s.key)

	code, out, errs := runCLI(t, s.env, "rotate-key", "--config", s.cfg)
	if code != 0 {
		t.Fatalf("rotate-key: %d %s", code, errs)
	}
	nk, err := keys.Load(next, s.env["AGENT_TPM_DEVICE"])
	if err != nil || nk.Kind != kind || nk.Public == cur.Public {
		t.Fatalf("next key %+v: %v", nk, err)
	}
	if fi, _ := os.Stat(next); fi.Mode().Perm() != 0o600 {
		t.Fatalf("next key mode %v", fi.Mode())
	}
	r := parseRotation(t, out)
	want := []string{cur.Public, nk.Public}
	if strings.Join(r.hclKeys, ",") != strings.Join(want, ",") ||
		strings.Join(r.policy["clinic-a"].PublicKeys, ",") != strings.Join(want, ",") || r.policy["clinic-a"].PublicKey != "" {
		t.Fatalf("entries %+v, want keys %v\n%s", r, want, out)
	}
	if !strings.Contains(out, "    accounts    = []") {
		t.Errorf("terraform entry not aligned as terraform fmt has it:\n%s", out)
	}
	code, out2, _ := runCLI(t, s.env, "rotate-key", "--config", s.cfg)
	if code != 0 || out2 != strings.Replace(out, "created now", "already there, reused", 1) {
		t.Fatalf("second rotate-key: %d\n%s", code, out2)
	}

	// The broker knows only the old key: once succeeds and nothing moves.
	s.broker.Set(func(b *agenttest.Broker) { b.KnownKeys[nk.Public] = nk.Signer.Public() })
	code, out, errs = runCLI(t, s.env, "once", "--config", s.cfg)
	if code != 0 || out != "" {
		t.Fatalf("once, old key only: %d %q %s", code, out, errs)
	}
	if _, err := os.Stat(next); err != nil {
		t.Fatal("the next key was adopted before the broker accepted it")
	}
	s.broker.Set(func(b *agenttest.Broker) {
		if b.RefusedKeys[nk.Public] != 1 {
			t.Errorf("the next key was tried %d times, want 1", b.RefusedKeys[nk.Public])
		}
	})

	// Both keys registered: once adopts the next key.
	s.broker.Set(func(b *agenttest.Broker) { b.Keys = append(b.Keys, nk.Signer.Public()) })
	code, out, errs = runCLI(t, s.env, "once", "--config", s.cfg)
	if code != 0 {
		t.Fatalf("once, both keys: %d %s", code, errs)
	}
	if !strings.Contains(errs, `"msg":"agent key rotated"`) {
		t.Errorf("no rotation logged:\n%s", errs)
	}
	r = parseRotation(t, out)
	if strings.Join(r.hclKeys, ",") != nk.Public || r.policy["clinic-a"].PublicKey != nk.Public || len(r.policy["clinic-a"].PublicKeys) != 0 {
		t.Fatalf("printed entry %+v, want only %s\n%s", r, nk.Public, out)
	}
	if _, err := os.Stat(next); !os.IsNotExist(err) {
		t.Fatalf("next key still there: %v", err)
	}
	if k, err := keys.Load(s.key, s.env["AGENT_TPM_DEVICE"]); err != nil || k.Public != nk.Public {
		t.Fatalf("key file after the rotation: %v", err)
	}

	// Only the new key: once works, and rotate-key can start the next round.
	s.broker.Set(func(b *agenttest.Broker) { b.Keys = b.Keys[1:] })
	if code, out, errs := runCLI(t, s.env, "once", "--config", s.cfg); code != 0 || out != "" {
		t.Fatalf("once, new key only: %d %q %s", code, out, errs)
	}
	if strings.Contains(errs, "orthanc-pw") {
		t.Error("the Orthanc password is in the output")
	}
}

// TestRotateKeyRefusals: rotate-key needs a loadable configuration and a
// usable next key if one is already there.
func TestRotateKeyRefusals(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "", "")
	s := newSetup(t, orth.URL, "", "", nil)
	os.WriteFile(keys.NextPath(s.key), []byte("not a key"), 0o600)
	code, _, errs := runCLI(t, s.env, "rotate-key", "--config", s.cfg)
	if code != exitFailure || !strings.Contains(errs, "remove it and run rotate-key again") {
		t.Errorf("unusable next key: %d %s", code, errs)
	}
	if data, _ := os.ReadFile(keys.NextPath(s.key)); string(data) != "not a key" {
		t.Error("rotate-key overwrote the next key file")
	}
	os.Chmod(s.key, 0o644)
	if code, _, errs := runCLI(t, s.env, "rotate-key", "--config", s.cfg); code != exitFailure || !strings.Contains(errs, "Broker.KeyFile") {
		t.Errorf("readable key: %d %s", code, errs)
	}
	if code, _, _ := runCLI(t, s.env, "rotate-key", "--config", s.cfg, "extra"); code != exitUsage {
		t.Errorf("stray argument: %d", code)
	}
}
