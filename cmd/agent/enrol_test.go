package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// runEnrolCLI runs the CLI in-process, like runCLI, without the testbed.
func runEnrolCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	code := c.main(context.Background(), args)
	return code, out.String(), errb.String()
}

// enrolConfig writes an agent configuration with real-looking values and
// returns its path and the key path it names (not created).
func enrolConfig(t *testing.T, mutate func(doc map[string]any)) (cfg, key string) {
	t.Helper()
	dir := t.TempDir()
	key = filepath.Join(dir, "agent.key")
	doc := map[string]any{
		"Broker":   map[string]any{"Url": "https://broker-abc-ew.a.run.app", "AgentId": "clinic-a", "KeyFile": key},
		"Orthanc":  map[string]any{"Url": "http://127.0.0.1:8042"},
		"Accounts": []string{"my-google", "clinic-store"},
	}
	if mutate != nil {
		mutate(doc)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfg, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return cfg, key
}

// enrolment is what enrol printed, parsed.
type enrolment struct {
	hcl       string // the terraform entry, from `  "ID" = {` to its `  }`
	hclPubKey string
	hclAccts  string // the accounts value as written
	policy    map[string]struct {
		PublicKey string
		Accounts  []string
	}
}

// parseEnrolment checks the shape of enrol's output: comment lines, one
// HCL entry, one JSON member (decoded with encoding/json).
func parseEnrolment(t *testing.T, out string) enrolment {
	t.Helper()
	var e enrolment
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	inHCL, jsonLines := false, 0
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "#") || l == "":
		case !inHCL && strings.HasSuffix(l, " = {"):
			inHCL = true
			e.hcl = l + "\n"
		case inHCL:
			e.hcl += l + "\n"
			if v, ok := strings.CutPrefix(l, "    public_key = "); ok {
				e.hclPubKey = strings.Trim(v, `"`)
			}
			if v, ok := strings.CutPrefix(l, "    accounts   = "); ok {
				e.hclAccts = v
			}
			if l == "  }" {
				inHCL = false
			}
		default:
			jsonLines++
			if err := json.Unmarshal([]byte("{"+l+"}"), &e.policy); err != nil {
				t.Fatalf("policy line %q is not a JSON member: %v\n%s", l, err, out)
			}
		}
	}
	if inHCL || e.hclPubKey == "" || e.hclAccts == "" || jsonLines != 1 || len(e.policy) != 1 {
		t.Fatalf("output is not one HCL entry and one JSON line:\n%s", out)
	}
	if strings.Count(e.hcl, "{") != 1 || strings.Count(e.hcl, "}") != 1 {
		t.Fatalf("HCL entry braces:\n%s", e.hcl)
	}
	return e
}

// TestEnrol: the key is made like keygen's (0600) when missing, reused on
// a second run, and both outputs parse and carry its public key.
func TestEnrol(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(doc map[string]any)
		env       map[string]string
		wantID    string
		wantAccts []string // in the JSON
		wantHCL   string   // the accounts value in HCL
		wantOut   []string // more in stdout
	}{
		{name: "accounts listed", wantID: "clinic-a", wantAccts: []string{"clinic-store", "my-google"},
			wantHCL: `["clinic-store", "my-google"]`},
		{name: "accounts empty", mutate: func(doc map[string]any) { doc["Accounts"] = []string{} },
			wantID: "clinic-a", wantAccts: []string{}, wantHCL: `[]`,
			wantOut: []string{"asks for every store it is", "terraform requires the list", `"Accounts": [] the broker grants this agent nothing`}},
		{name: "accounts left out", mutate: func(doc map[string]any) { delete(doc, "Accounts") },
			wantID: "clinic-a", wantAccts: []string{}, wantHCL: `[]`},
		{name: "environment overrides", env: map[string]string{"AGENT_BROKER_AGENT_ID": "site-7", "AGENT_ACCOUNTS": "radiology"},
			wantID: "site-7", wantAccts: []string{"radiology"}, wantHCL: `["radiology"]`},
		{name: "id terraform refuses", mutate: func(doc map[string]any) { doc["Broker"].(map[string]any)["AgentId"] = "clinic@a" },
			wantID: "clinic@a", wantAccts: []string{"clinic-store", "my-google"}, wantHCL: `["clinic-store", "my-google"]`,
			wantOut: []string{"terraform's agents variable accepts only"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, key := enrolConfig(t, tc.mutate)
			code, out, errs := runEnrolCLI(t, tc.env, "enrol", "--config", cfg)
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			if !strings.Contains(errs, "created the agent key") || !strings.Contains(out, "(created now)") {
				t.Errorf("no word of the new key:\nstdout %s\nstderr %s", out, errs)
			}
			fi, err := os.Stat(key)
			if err != nil {
				t.Fatal(err)
			}
			if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %#o, want 0600", fi.Mode().Perm())
			}
			priv, err := agentkey.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			pub := agentkey.FormatPublicKey(priv.Public().(ed25519.PublicKey))

			e := parseEnrolment(t, out)
			if !strings.HasPrefix(e.hcl, `  "`+tc.wantID+`" = {`) || e.hclPubKey != pub || e.hclAccts != tc.wantHCL {
				t.Errorf("HCL entry, want id %q key %s accounts %s:\n%s", tc.wantID, pub, tc.wantHCL, e.hcl)
			}
			p, ok := e.policy[tc.wantID]
			if !ok || p.PublicKey != pub || strings.Join(p.Accounts, ",") != strings.Join(tc.wantAccts, ",") || p.Accounts == nil {
				t.Errorf("policy member %+v, want %q with %s and %q", e.policy, tc.wantID, pub, tc.wantAccts)
			}
			if !strings.Contains(out, "# Public key: "+pub+"\n") {
				t.Errorf("no public key line:\n%s", out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errs, "PRIVATE KEY") {
				t.Fatal("the private key is in the output")
			}

			// Again: the same key, the same entries.
			before, _ := os.ReadFile(key)
			code, out2, errs2 := runEnrolCLI(t, tc.env, "enrol", "--config", cfg)
			if code != exitOK {
				t.Fatalf("second run: exit %d\n%s", code, errs2)
			}
			if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
				t.Fatal("the second run changed the key")
			}
			if strings.Contains(errs2, "created") || !strings.Contains(out2, "(already there, reused)") {
				t.Errorf("second run did not reuse the key:\n%s\n%s", out2, errs2)
			}
			e2 := parseEnrolment(t, out2)
			if e2.hcl != e.hcl || e2.policy[tc.wantID].PublicKey != pub {
				t.Errorf("second run printed another entry:\n%s\nthen\n%s", e.hcl, e2.hcl)
			}
		})
	}
}

// TestEnrolRefusals: exit codes, the field named, and no key made when the
// agent id is not a real one.
func TestEnrolRefusals(t *testing.T) {
	setID := func(id any) func(map[string]any) {
		return func(doc map[string]any) { doc["Broker"].(map[string]any)["AgentId"] = id }
	}
	tests := []struct {
		name    string
		mutate  func(doc map[string]any)
		before  func(t *testing.T, key string) // e.g. put a file at the key path
		args    []string                       // after "enrol --config CFG"; nil: none
		env     map[string]string
		noCfg   bool // run without --config
		code    int
		want    string // in stderr
		keyMade bool   // the key exists afterwards
	}{
		{name: "empty agent id", mutate: setID(""), code: exitFailure, want: "config: Broker.AgentId: is empty"},
		{name: "placeholder agent id", mutate: setID("CHANGE_ME"), code: exitFailure, want: "Broker.AgentId: \"CHANGE_ME\" is a placeholder"},
		{name: "template agent id", mutate: setID("<agent-id>"), code: exitFailure, want: "Broker.AgentId: \"<agent-id>\" is a placeholder"},
		{name: "agent id from a template", mutate: setID("AGENT_ID"), code: exitFailure, want: "Broker.AgentId"},
		{name: "placeholder from the environment", env: map[string]string{"AGENT_BROKER_AGENT_ID": "your-agent-id"}, code: exitFailure, want: "Broker.AgentId"},
		{name: "agent id the broker refuses", mutate: setID("clinic a"), code: exitFailure, want: "Broker.AgentId: \"clinic a\" cannot be an agent id"},
		{name: "no key file", mutate: func(doc map[string]any) { delete(doc["Broker"].(map[string]any), "KeyFile") },
			code: exitFailure, want: "Broker.KeyFile: is required"},
		{name: "no configuration at all", noCfg: true, code: exitFailure, want: "Broker.AgentId: is empty"},
		{name: "placeholder broker url", mutate: func(doc map[string]any) { doc["Broker"].(map[string]any)["Url"] = "" },
			code: exitFailure, want: "Broker.Url: is required", keyMade: true},
		{name: "http broker url", mutate: func(doc map[string]any) { doc["Broker"].(map[string]any)["Url"] = "http://broker.example" },
			code: exitFailure, want: "Broker.Url", keyMade: true},
		{name: "existing key readable by others", before: func(t *testing.T, key string) {
			if _, err := agentkey.WriteNew(key); err != nil {
				t.Fatal(err)
			}
			makeWorldReadable(t, key)
		}, code: exitFailure, want: "Broker.KeyFile", keyMade: true},
		{name: "existing file is not a key", before: func(t *testing.T, key string) {
			os.WriteFile(key, []byte("not a key\n"), 0o600)
		}, code: exitFailure, want: "Broker.KeyFile", keyMade: true},
		{name: "key directory missing", mutate: func(doc map[string]any) {
			b := doc["Broker"].(map[string]any)
			b["KeyFile"] = filepath.Join(filepath.Dir(b["KeyFile"].(string)), "missing", "agent.key")
		}, code: exitFailure, want: "Broker.KeyFile"},
		{name: "unknown field", mutate: func(doc map[string]any) { doc["Acounts"] = []string{} }, code: exitFailure, want: "Acounts"},
		{name: "stray argument", args: []string{"extra"}, code: exitUsage, want: "unexpected argument"},
		{name: "unknown flag", args: []string{"--out", "x"}, code: exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, key := enrolConfig(t, tc.mutate)
			if tc.before != nil {
				tc.before(t, key)
			}
			args := []string{"enrol", "--config", cfg}
			if tc.noCfg {
				args = []string{"enrol"}
			}
			code, out, errs := runEnrolCLI(t, tc.env, append(args, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, errs)
			}
			if !strings.Contains(errs, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errs)
			}
			if out != "" {
				t.Errorf("stdout on a refusal: %q", out)
			}
			if _, err := os.Lstat(key); (err == nil) != tc.keyMade {
				t.Errorf("key file exists: %v, want %v", err == nil, tc.keyMade)
			}
		})
	}
}

func TestCheckEnrolAgentID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"clinic-a", true},
		{"Site_7.radiology", true},
		{"agent@clinic", true}, // the broker allows '@'
		{"a", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{"   ", false},
		{"AGENT_ID", false},
		{"agent-id", false},
		{"changeme", false},
		{"Change-Me", false},
		{"TODO", false},
		{"<your agent id>", false},
		{"${AGENT_ID}", false},
		{"{{agent_id}}", false},
		{"-leading-hyphen", false},
		{"with space", false},
		{"tab\there", false},
		{strings.Repeat("a", 129), false},
		{"ünicode", false},
	}
	for _, tc := range tests {
		if err := checkEnrolAgentID(tc.id); (err == nil) != tc.ok {
			t.Errorf("checkEnrolAgentID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}
