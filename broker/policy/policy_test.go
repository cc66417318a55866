package policy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

func pubKey(t testing.TB) string {
	t.Helper()
	pub, _, err := agentkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return agentkey.FormatPublicKey(pub)
}

// doc builds a valid policy and lets a test mutate it as generic JSON.
func doc(t testing.TB, mutate func(m map[string]any)) []byte {
	t.Helper()
	m := map[string]any{
		"Audience": "https://broker.example.run.app/",
		"BaseUrl":  "https://healthcare.googleapis.com/v1/",
		"Accounts": map[string]any{
			"sa": map[string]any{"Project": "p", "Location": "europe-west2", "Dataset": "d", "DicomStore": "s",
				"ServiceAccountSecret": "sm://projects/p/secrets/dicom-sa/versions/latest"},
			"user": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "s2",
				"AuthorizedUserSecret": "/etc/broker/user.json"},
			"inline": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "s3",
				"AuthorizedUserClientId": "id", "AuthorizedUserClientSecret": "cs", "AuthorizedUserRefreshToken": "rt-secret-value"},
			"keyless": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "s4",
				"ImpersonateServiceAccount": "store-dicom@p.iam.gserviceaccount.com", "TokenLifetime": "15m"},
		},
		"Agents": map[string]any{
			"clinic-a": map[string]any{"PublicKey": pubKey(t), "Accounts": []any{"sa", "keyless"}},
			"clinic-b": map[string]any{"PublicKey": pubKey(t), "Accounts": []any{"user"}, "Disabled": true},
		},
	}
	if mutate != nil {
		mutate(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func acct(m map[string]any, name string) map[string]any {
	return m["Accounts"].(map[string]any)[name].(map[string]any)
}

func agent(m map[string]any, id string) map[string]any {
	return m["Agents"].(map[string]any)[id].(map[string]any)
}

func TestParseValid(t *testing.T) {
	p, err := Parse(doc(t, nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := p.AudienceURL(); got != "https://broker.example.run.app" {
		t.Errorf("AudienceURL = %q", got)
	}
	sa := p.Account("sa")
	if sa.Kind() != ServiceAccountKey || sa.Name() != "sa" {
		t.Errorf("sa kind/name = %v/%q", sa.Kind(), sa.Name())
	}
	if want := "https://healthcare.googleapis.com/v1/projects/p/locations/europe-west2/datasets/d/dicomStores/s/dicomWeb/"; sa.DICOMwebURL() != want {
		t.Errorf("DICOMwebURL = %q, want %q", sa.DICOMwebURL(), want)
	}
	if got := sa.ScopeList(); len(got) != 1 || got[0] != DefaultScope {
		t.Errorf("ScopeList = %v", got)
	}
	if k := p.Account("keyless"); k.Kind() != Impersonation || k.Lifetime().Minutes() != 15 {
		t.Errorf("keyless = %v %v", k.Kind(), k.Lifetime())
	}
	if p.Account("inline").Kind() != AuthorizedUser || p.Account("user").Kind() != AuthorizedUser {
		t.Error("authorized user kinds wrong")
	}
	if _, ok := p.AgentKeys("clinic-a"); !ok {
		t.Error("clinic-a should have a key")
	}
	if _, ok := p.AgentKeys("clinic-b"); ok {
		t.Error("disabled clinic-b must have no key")
	}
	if _, ok := p.AgentKeys("nobody"); ok {
		t.Error("unknown agent must have no key")
	}
	grants := p.Grants("clinic-a")
	if len(grants) != 2 || grants[0].Name() != "keyless" || grants[1].Name() != "sa" {
		t.Errorf("Grants = %v", grants)
	}
	if len(p.Grants("clinic-b")) != 0 {
		t.Error("a disabled agent has no grants")
	}
	if _, ok := p.Allowed("clinic-a", "user"); ok {
		t.Error("clinic-a may not use user")
	}
	if _, ok := p.Allowed("clinic-a", "sa"); !ok {
		t.Error("clinic-a may use sa")
	}
}

func TestParseDefaultsBaseURL(t *testing.T) {
	p, err := Parse(doc(t, func(m map[string]any) { delete(m, "BaseUrl") }))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Account("sa").DICOMwebURL(), DefaultBaseURL+"projects/") {
		t.Errorf("DICOMwebURL = %q", p.Account("sa").DICOMwebURL())
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		raw    string
		want   []string // every substring must appear in the error
	}{
		{name: "not JSON", raw: `{"Audience":`, want: []string{"policy:"}},
		{name: "trailing data", raw: string(doc(t, nil)) + `{}`, want: []string{"after the JSON document"}},
		{name: "unknown top-level field", mutate: func(m map[string]any) { m["Agnets"] = map[string]any{} }, want: []string{`unknown field "Agnets"`}},
		{name: "unknown account field", mutate: func(m map[string]any) { acct(m, "sa")["DicomStor"] = "x" }, want: []string{`unknown field "DicomStor"`}},
		{name: "missing audience", mutate: func(m map[string]any) { delete(m, "Audience") }, want: []string{"Audience: required"}},
		{name: "http audience off loopback", mutate: func(m map[string]any) { m["Audience"] = "http://broker.example" }, want: []string{"Audience:", "https"}},
		{name: "http base on loopback ok, ftp not", mutate: func(m map[string]any) { m["BaseUrl"] = "ftp://x/" }, want: []string{"BaseUrl:"}},
		{name: "credentials in a URL are refused, not echoed", mutate: func(m map[string]any) { m["Audience"] = "https://admin:rt-secret-value@broker.example" }, want: []string{"Audience: must not carry credentials"}},
		{name: "relative audience", mutate: func(m map[string]any) { m["Audience"] = "/broker" }, want: []string{"Audience: is not an absolute URL"}},
		{name: "scheme-less user info is refused, not echoed", mutate: func(m map[string]any) { m["Audience"] = "admin:rt-secret-value@broker.example" }, want: []string{"Audience: is not an absolute URL"}},
		{name: "http to a localhost look-alike", mutate: func(m map[string]any) { m["BaseUrl"] = "http://LOCALHOST.evil.example/v1/" }, want: []string{"BaseUrl:", "https"}},
		{name: "fragment in audience", mutate: func(m map[string]any) { m["Audience"] = "https://broker.example/#rt-secret-value" }, want: []string{"Audience:", "query or fragment"}},
		{name: "query in base", mutate: func(m map[string]any) { m["BaseUrl"] = "https://h/v1/?key=rt-secret-value" }, want: []string{"BaseUrl:", "query or fragment"}},
		{name: "no accounts", mutate: func(m map[string]any) { m["Accounts"] = map[string]any{}; m["Agents"] = map[string]any{} }, want: []string{"at least one account"}},
		{name: "missing project", mutate: func(m map[string]any) { delete(acct(m, "sa"), "Project") }, want: []string{`account "sa": Project: required`}},
		{name: "missing location", mutate: func(m map[string]any) { delete(acct(m, "user"), "Location") }, want: []string{`account "user": Location: required`}},
		{name: "missing dataset", mutate: func(m map[string]any) { delete(acct(m, "sa"), "Dataset") }, want: []string{`account "sa": Dataset: required`}},
		{name: "missing store", mutate: func(m map[string]any) { delete(acct(m, "sa"), "DicomStore") }, want: []string{`account "sa": DicomStore: required`}},
		{name: "path injection in store", mutate: func(m map[string]any) { acct(m, "sa")["DicomStore"] = "../../x" }, want: []string{`account "sa": DicomStore:`, "not a valid identifier"}},
		{name: "no credential", mutate: func(m map[string]any) { delete(acct(m, "sa"), "ServiceAccountSecret") }, want: []string{`account "sa": no credential`}},
		{name: "two credentials", mutate: func(m map[string]any) { acct(m, "sa")["ImpersonateServiceAccount"] = "x@p.iam.gserviceaccount.com" }, want: []string{`account "sa": several credentials`, "ServiceAccountSecret", "ImpersonateServiceAccount"}},
		{name: "partial inline user", mutate: func(m map[string]any) { delete(acct(m, "inline"), "AuthorizedUserRefreshToken") }, want: []string{`account "inline": AuthorizedUserRefreshToken: required`}},
		{name: "bad sm reference", mutate: func(m map[string]any) { acct(m, "sa")["ServiceAccountSecret"] = "sm://projects/p/secrets/s" }, want: []string{`account "sa": ServiceAccountSecret:`}},
		{name: "other URL scheme for a secret", mutate: func(m map[string]any) { acct(m, "sa")["ServiceAccountSecret"] = "https://evil/key.json" }, want: []string{`account "sa": ServiceAccountSecret:`, "sm://"}},
		{name: "bad impersonation email", mutate: func(m map[string]any) { acct(m, "keyless")["ImpersonateServiceAccount"] = "not-an-email" }, want: []string{`account "keyless": ImpersonateServiceAccount:`}},
		{name: "bad lifetime", mutate: func(m map[string]any) { acct(m, "keyless")["TokenLifetime"] = "forever" }, want: []string{`account "keyless": TokenLifetime:`}},
		{name: "lifetime too long", mutate: func(m map[string]any) { acct(m, "keyless")["TokenLifetime"] = "13h" }, want: []string{`account "keyless": TokenLifetime:`, "1s..12h"}},
		{name: "lifetime on a key account", mutate: func(m map[string]any) { acct(m, "sa")["TokenLifetime"] = "15m" }, want: []string{`account "sa": TokenLifetime: only applies`}},
		{name: "bad scope", mutate: func(m map[string]any) { acct(m, "sa")["Scopes"] = []any{"cloud-healthcare"} }, want: []string{`account "sa": Scopes[0]`}},
		{name: "bad account name", mutate: func(m map[string]any) { m["Accounts"].(map[string]any)["a/b"] = acct(m, "sa") }, want: []string{`account "a/b": name`}},
		{name: "agent unknown account", mutate: func(m map[string]any) { agent(m, "clinic-a")["Accounts"] = []any{"sa", "nope"} }, want: []string{`agent "clinic-a": Accounts: unknown account "nope"`}},
		{name: "agent duplicate account", mutate: func(m map[string]any) { agent(m, "clinic-a")["Accounts"] = []any{"sa", "sa"} }, want: []string{`agent "clinic-a": Accounts: "sa" listed twice`}},
		{name: "agent malformed key", mutate: func(m map[string]any) { agent(m, "clinic-a")["PublicKey"] = "ed25519:AAAA" }, want: []string{`agent "clinic-a": PublicKey:`}},
		{name: "agent key wrong prefix", mutate: func(m map[string]any) { agent(m, "clinic-a")["PublicKey"] = "rsa:AAAA" }, want: []string{`agent "clinic-a": PublicKey:`, "ed25519:"}},
		{name: "agent unknown field", mutate: func(m map[string]any) { agent(m, "clinic-a")["Store"] = "x" }, want: []string{`unknown field "Store"`}},
		{name: "bad agent id", mutate: func(m map[string]any) { m["Agents"].(map[string]any)["bad id"] = agent(m, "clinic-a") }, want: []string{`agent "bad id": id`}},
		{name: "wrong type", mutate: func(m map[string]any) { agent(m, "clinic-a")["Accounts"] = "sa" }, want: []string{"Accounts"}},
		{name: "several problems reported together", mutate: func(m map[string]any) {
			delete(acct(m, "sa"), "Project")
			agent(m, "clinic-a")["PublicKey"] = "x"
		}, want: []string{`account "sa": Project: required`, `agent "clinic-a": PublicKey:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.raw)
			if tt.raw == "" {
				data = doc(t, tt.mutate)
			}
			p, err := Parse(data)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "rt-secret-value") {
				t.Errorf("error leaks the inline refresh token: %v", err)
			}
		})
	}
}

func TestLoopbackHTTPAllowed(t *testing.T) {
	tests := []struct{ audience, base string }{
		{"http://127.0.0.1:8080", "http://localhost:9000/v1"},
		{"http://LOCALHOST:8080/", "http://LocalHost:9000/v1/"},
		{"http://[::1]:8080", "http://127.0.0.2:9000/v1/"},
	}
	for _, tt := range tests {
		p, err := Parse(doc(t, func(m map[string]any) {
			m["Audience"] = tt.audience
			m["BaseUrl"] = tt.base
		}))
		if err != nil {
			t.Errorf("%s, %s: loopback http refused: %v", tt.audience, tt.base, err)
			continue
		}
		if got := p.Account("sa").DICOMwebURL(); !strings.HasPrefix(got, strings.TrimSuffix(tt.base, "/")+"/projects/") {
			t.Errorf("%s: DICOMwebURL = %q", tt.base, got)
		}
	}
}

func TestFingerprintFollowsDefinition(t *testing.T) {
	a, _ := Parse(doc(t, nil))
	b, _ := Parse(doc(t, func(m map[string]any) { acct(m, "sa")["DicomStore"] = "other" }))
	if a.Account("sa").Fingerprint() == b.Account("sa").Fingerprint() {
		t.Error("changing the store must change the fingerprint")
	}
	if a.Account("keyless").Fingerprint() != b.Account("keyless").Fingerprint() {
		t.Error("an unchanged account keeps its fingerprint")
	}
	if a.Account("sa").CacheKey() == b.Account("sa").CacheKey() || a.Account("keyless").CacheKey() != b.Account("keyless").CacheKey() {
		t.Error("the cache key must follow the definition")
	}
	// Same definition under two names: the fingerprints match, the cache
	// keys must not (a token is handed out per account).
	c, err := Parse(doc(t, func(m map[string]any) { m["Accounts"].(map[string]any)["sa2"] = acct(m, "sa") }))
	if err != nil {
		t.Fatal(err)
	}
	if c.Account("sa").Fingerprint() != c.Account("sa2").Fingerprint() || c.Account("sa").CacheKey() == c.Account("sa2").CacheKey() {
		t.Error("accounts with one definition must have distinct cache keys")
	}
}

func TestWatcherKeepsLastGood(t *testing.T) {
	good := doc(t, nil)
	current := good
	var fetchErr error
	w, err := NewWatcher(context.Background(), func(context.Context) ([]byte, error) { return current, fetchErr }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := w.Current()

	current = []byte(`{"Audience": 1}`)
	if err := w.Reload(context.Background()); err == nil {
		t.Fatal("bad document accepted")
	}
	if w.Current() != first {
		t.Fatal("bad document replaced the policy in force")
	}
	fetchErr = errors.New("secret manager down")
	if err := w.Reload(context.Background()); err == nil || w.Current() != first {
		t.Fatal("failed fetch must keep the policy")
	}
	fetchErr = nil
	current = doc(t, func(m map[string]any) { delete(m["Agents"].(map[string]any), "clinic-b") })
	if err := w.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.Current().Agent("clinic-b") != nil {
		t.Fatal("good new document not applied")
	}
}

func TestNewWatcherRefusesBadStart(t *testing.T) {
	_, err := NewWatcher(context.Background(), func(context.Context) ([]byte, error) {
		return doc(t, func(m map[string]any) { delete(acct(m, "sa"), "Dataset") }), nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), `account "sa": Dataset: required`) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(doc(f, nil))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"Accounts":{"a":null},"Agents":{"b":null}}`))
	f.Add([]byte(`{"Audience":"https://x","Accounts":{"a":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","ImpersonateServiceAccount":"a@b.cc"}},"Agents":{"x":{"PublicKey":"ed25519:","Accounts":["a"]}}}`))
	f.Add([]byte(`{"Audience":"https://x","Accounts":{"a":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","ImpersonateServiceAccount":"a@b.cc"}},"Agents":{"x":{"PublicKeys":["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],"Accounts":["a"],"AllowedSourceRanges":["203.0.113.0/24","2001:db8::/32"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must be internally consistent.
		for id, ag := range p.Agents() {
			if _, ok := p.AgentKeys(id); ok == (ag.Disabled || len(ag.keys) == 0) {
				t.Fatalf("agent %q key state inconsistent", id)
			}
			if p.SourceAllowed(id, netip.Addr{}) != (ag.AllowedSourceRanges == nil) || len(ag.ranges) != len(ag.AllowedSourceRanges) {
				t.Fatalf("agent %q source ranges inconsistent", id)
			}
			for _, a := range p.Grants(id) {
				if a == nil || a.DICOMwebURL() == "" || a.Kind() == 0 {
					t.Fatalf("agent %q granted an invalid account", id)
				}
			}
		}
	})
}

// withKey is doc with clinic-a's PublicKey set to the raw 32 bytes in hex.
func withKey(t *testing.T, rawHex string) []byte {
	t.Helper()
	raw, err := hex.DecodeString(rawHex)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		t.Fatalf("bad test key %q", rawHex)
	}
	return doc(t, func(m map[string]any) { agent(m, "clinic-a")["PublicKey"] = agentkey.FormatPublicKey(raw) })
}

func TestParseRefusesWeakPublicKeys(t *testing.T) {
	const (
		smallOrder   = "small-order"
		nonCanonical = "non-canonical"
		offCurve     = "not a valid Ed25519 point"
	)
	tests := []struct {
		name, hex, want string
	}{
		// The eight points of small order, canonically encoded.
		{"identity (order 1)", "0100000000000000000000000000000000000000000000000000000000000000", smallOrder},
		{"y=-1 (order 2)", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", smallOrder},
		{"y=0 (order 4)", "0000000000000000000000000000000000000000000000000000000000000000", smallOrder},
		{"y=0, x negative (order 4)", "0000000000000000000000000000000000000000000000000000000000000080", smallOrder},
		{"order 8, first", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", smallOrder},
		{"order 8, second", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", smallOrder},
		{"order 8, third", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", smallOrder},
		{"order 8, fourth", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", smallOrder},
		// Their non-canonical spellings: "-0" sign bits and y >= p.
		{"identity, x sign set", "0100000000000000000000000000000000000000000000000000000000000080", nonCanonical},
		{"y=-1, x sign set", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", nonCanonical},
		{"y=p (=0)", "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", nonCanonical},
		{"y=p (=0), x sign set", "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", nonCanonical},
		{"y=p+1 (identity)", "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", nonCanonical},
		{"y=p+1 (identity), x sign set", "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", nonCanonical},
		// A non-canonical spelling of a point that is not of small order.
		{"y=p+3", "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", nonCanonical},
		{"not on the curve", "efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", offCurve},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(withKey(t, tt.hex))
			if err == nil {
				t.Fatal("weak key accepted")
			}
			for _, w := range []string{`agent "clinic-a": PublicKey:`, tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// Why: with the identity as the key, R = identity and S = 0 is a valid
	// signature of any message, so anyone could sign as the agent.
	identity, _ := hex.DecodeString(tests[0].hex)
	if !ed25519.Verify(identity, []byte("any assertion"), append(bytes.Clone(identity), make([]byte, 32)...)) {
		t.Error("expected the forged signature to verify against the identity key (the attack this refuses)")
	}

	// A real key is accepted and is what AgentKeys returns.
	pub, _, _ := agentkey.Generate()
	p, err := Parse(withKey(t, hex.EncodeToString(pub)))
	if err != nil {
		t.Fatalf("valid key refused: %v", err)
	}
	if got, ok := p.AgentKeys("clinic-a"); !ok || len(got) != 1 || !pub.Equal(got[0]) {
		t.Errorf("AgentKeys = %v, %v", got, ok)
	}
}

// ecdsa-p256: keys (TPM-made) are accepted; a point off the curve is
// refused naming the agent and the field.
func TestECDSAP256AgentKeys(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	line, err := agentkey.FormatECDSAP256(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	withLine := func(line string) []byte {
		return doc(t, func(m map[string]any) {
			m["Agents"].(map[string]any)["clinic-a"].(map[string]any)["PublicKey"] = line
		})
	}
	p, err := Parse(withLine(line))
	if err != nil {
		t.Fatalf("ecdsa-p256 key refused: %v", err)
	}
	if got, ok := p.AgentKeys("clinic-a"); !ok || len(got) != 1 || !k.PublicKey.Equal(got[0]) {
		t.Errorf("AgentKeys = %v, %v", got, ok)
	}
	raw, _ := k.PublicKey.Bytes()
	raw[64] ^= 1
	_, err = Parse(withLine(agentkey.PrefixECDSAP256 + base64.StdEncoding.EncodeToString(raw)))
	if err == nil || !strings.Contains(err.Error(), `agent "clinic-a": PublicKey:`) || !strings.Contains(err.Error(), "not a point on the P-256 curve") {
		t.Fatalf("off-curve key: %v", err)
	}
}

func TestParseIsStrictJSON(t *testing.T) {
	// clinic-b is disabled in doc; each mutation spells Disabled twice.
	disabled := string(doc(t, nil))
	if !strings.Contains(disabled, `"Disabled":true`) {
		t.Fatal("test document changed")
	}
	tests := []struct {
		name, from, to string
		want           []string
	}{
		// encoding/json lets the last, case-folded key win: the agent would be enabled.
		{"case-only key match", `"Disabled":true`, `"Disabled":true,"disabled":false`, []string{"Agents.clinic-b.disabled", `"Disabled" only case-insensitively`}},
		{"duplicate key", `"Disabled":true`, `"Disabled":true,"Disabled":false`, []string{"Agents.clinic-b.Disabled", "duplicate key"}},
		{"case-only top-level key", `"Audience":`, `"audience":`, []string{"audience", `"Audience" only case-insensitively`}},
		{"duplicate account", `"Accounts":{`, `"Accounts":{"sa":{},`, []string{"Accounts.sa", "duplicate key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := strings.Replace(disabled, tt.from, tt.to, 1)
			p, err := Parse([]byte(raw))
			if err == nil {
				t.Fatalf("accepted; clinic-b enabled = %v", p.Grants("clinic-b") != nil)
			}
			for _, w := range append([]string{"policy: "}, tt.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// baseURLCases are BaseUrl values and whether the broker takes them; the
// Terraform module's rule is checked against the same cases.
var baseURLCases = []struct {
	base string
	ok   bool
}{
	{"https://healthcare.googleapis.com/v1/", true},
	{"https://healthcare.googleapis.com/v1beta1", true},
	{"https://healthcare.googleapis.com", true},
	{"https://healthcare.googleapis.com:443/v1/", true},
	{"https://HEALTHCARE.GOOGLEAPIS.COM/v1/", false}, // one spelling; url keeps the case
	{"https://europe-west2-healthcare.googleapis.com/v1/", true},
	{"https://healthcare-psc.p.googleapis.com/v1/", true},
	{"http://127.0.0.1:9000/v1/", true},
	{"https://localhost:9443/v1/", true},
	{"https://evil.example/v1/", false},
	{"https://googleapis.com/v1/", false},
	{"https://healthcare.googleapis.com.evil.example/v1/", false},
	{"https://evilgoogleapis.com/v1/", false},
	{"https://healthcare.googleapis.com./v1/", false},
	{"https://1.2.3.4/v1/", false},
	{"http://healthcare.googleapis.com/v1/", false},
	{"https://evil.example%2f.googleapis.com/v1/", false},
	{"https://user@healthcare.googleapis.com/v1/", false},
	{"https://evil.example#.googleapis.com/v1/", false},
	{"https://healthcare.googleapis.com/v1/?", false}, // would make every path a query
	{"https://healthcare.googleapis.com/v1/#", false},
	{"https://healthcare.googleapis.com/v1/?key=k", false},
	{"ftp://healthcare.googleapis.com/v1/", false},
}

func TestBaseURLMustBeGoogle(t *testing.T) {
	for _, tt := range baseURLCases {
		t.Run(tt.base, func(t *testing.T) {
			_, err := Parse(doc(t, func(m map[string]any) { m["BaseUrl"] = tt.base }))
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "BaseUrl:") {
				t.Fatalf("err = %v, want a BaseUrl refusal", err)
			}
		})
	}
	// Audience is the broker's own URL: any https host stays allowed.
	if _, err := Parse(doc(t, func(m map[string]any) { m["Audience"] = "https://broker.example.org" })); err != nil {
		t.Errorf("Audience: %v", err)
	}
}

// TestTerraformBaseURLRuleMatches: the module's healthcare_base_url
// validation (terraform/variables.tf; Terraform's regex is Go's regexp)
// takes exactly what the broker takes, except loopback, which a Cloud Run
// broker cannot mean. So a value the module plans is never one the
// broker then refuses at start.
func TestTerraformBaseURLRuleMatches(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "terraform", "variables.tf"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`condition\s*=\s*can\(regex\(("(?:[^"\\]|\\.)*"),\s*var\.healthcare_base_url\)\)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("terraform/variables.tf: no can(regex(\"...\", var.healthcare_base_url)) condition")
	}
	pattern, err := strconv.Unquote(string(m[1]))
	if err != nil {
		t.Fatalf("the rule's HCL string: %v", err)
	}
	rule := regexp.MustCompile(pattern)
	for _, tt := range baseURLCases {
		u, _ := url.Parse(tt.base)
		want := tt.ok && (u == nil || !urlrule.IsLoopbackHost(u.Hostname()))
		if got := rule.MatchString(tt.base); got != want {
			t.Errorf("terraform takes %q: %v, want %v (broker: %v)", tt.base, got, want, tt.ok)
		}
	}
}

// An agent has PublicKey or PublicKeys (one or two keys of any kind),
// never both; each listed key is checked like PublicKey and named by its
// index.
func TestAgentPublicKeys(t *testing.T) {
	ed1, ed2, ed3 := pubKey(t), pubKey(t), pubKey(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecLine, err := agentkey.FormatECDSAP256(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	identity := agentkey.FormatPublicKey(append([]byte{1}, make([]byte, 31)...)) // small order
	tests := []struct {
		name  string
		set   map[string]any // clinic-a's key fields; nil value = delete
		nkeys int            // accepted with this many keys, when want is empty
		want  []string       // error substrings
	}{
		{name: "one listed key", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1}}, nkeys: 1},
		{name: "two keys of two kinds", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, ecLine}}, nkeys: 2},
		{name: "two Ed25519 keys", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, ed2}}, nkeys: 2},
		{name: "null list means absent", set: map[string]any{"PublicKeys": json.RawMessage("null")}, nkeys: 1},
		{name: "null list and no PublicKey", set: map[string]any{"PublicKey": nil, "PublicKeys": json.RawMessage("null")}, want: []string{`agent "clinic-a": no key`}},
		{name: "both fields", set: map[string]any{"PublicKeys": []any{ed2}}, want: []string{`agent "clinic-a": PublicKey and PublicKeys are both set`}},
		{name: "neither field", set: map[string]any{"PublicKey": nil}, want: []string{`agent "clinic-a": no key: set PublicKey or PublicKeys`}},
		{name: "empty PublicKey, no list", set: map[string]any{"PublicKey": ""}, want: []string{`agent "clinic-a": no key`}},
		{name: "empty list", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{}}, want: []string{`agent "clinic-a": PublicKeys: 0 keys`}},
		{name: "three keys", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, ed2, ed3}}, want: []string{`agent "clinic-a": PublicKeys: 3 keys`}},
		{name: "malformed second key", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, "ed25519:AAAA"}}, want: []string{`agent "clinic-a": PublicKeys[1]:`}},
		{name: "wrong prefix", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{"rsa:AAAA"}}, want: []string{`agent "clinic-a": PublicKeys[0]:`, "ed25519:"}},
		{name: "weak second key", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, identity}}, want: []string{`agent "clinic-a": PublicKeys[1]:`, "small-order"}},
		{name: "key listed twice", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, ed1}}, want: []string{`agent "clinic-a": PublicKeys[1]: the same key as PublicKeys[0]`}},
		{name: "P-256 key listed twice", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ecLine, ecLine}}, want: []string{`agent "clinic-a": PublicKeys[1]: the same key as PublicKeys[0]`}},
		{name: "empty entry", set: map[string]any{"PublicKey": nil, "PublicKeys": []any{ed1, ""}}, want: []string{`agent "clinic-a": PublicKeys[1]:`}},
		{name: "not a list", set: map[string]any{"PublicKey": nil, "PublicKeys": ed1}, want: []string{"PublicKeys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(doc(t, func(m map[string]any) {
				for k, v := range tt.set {
					if v == nil {
						delete(agent(m, "clinic-a"), k)
					} else {
						agent(m, "clinic-a")[k] = v
					}
				}
			}))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if keys, ok := p.AgentKeys("clinic-a"); !ok || len(keys) != tt.nkeys {
					t.Fatalf("AgentKeys = %d keys, %v; want %d", len(keys), ok, tt.nkeys)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// The keys come back in the order listed, each the key written.
	p, err := Parse(doc(t, func(m map[string]any) {
		delete(agent(m, "clinic-a"), "PublicKey")
		agent(m, "clinic-a")["PublicKeys"] = []any{ecLine, ed1}
	}))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := p.AgentKeys("clinic-a")
	want0, _ := agentkey.ParsePublicKey(ed1)
	if len(keys) != 2 || !ec.PublicKey.Equal(keys[0]) || !want0.(ed25519.PublicKey).Equal(keys[1]) {
		t.Errorf("AgentKeys = %v", keys)
	}
}

func TestAllowedSourceRangesRules(t *testing.T) {
	tests := []struct {
		name   string
		ranges any      // the field's JSON value
		want   []string // error substrings; none = accepted
	}{
		{name: "IPv4 and IPv6", ranges: []any{"203.0.113.0/24", "2001:db8:cafe::/48"}},
		{name: "one address", ranges: []any{"203.0.113.7/32", "2001:db8::7/128"}},
		{name: "anywhere, said outright", ranges: []any{"0.0.0.0/0", "::/0"}},
		{name: "overlapping prefixes", ranges: []any{"10.0.0.0/8", "10.1.0.0/16"}},
		{name: "empty list", ranges: []any{}, want: []string{`agent "clinic-a": AllowedSourceRanges: an empty list would refuse every request`}},
		{name: "host bits set", ranges: []any{"10.0.0.1/8"}, want: []string{`agent "clinic-a": AllowedSourceRanges[0]: "10.0.0.1/8" has host bits set: write 10.0.0.0/8, or the address alone as 10.0.0.1/32`}},
		{name: "IPv6 host bits set", ranges: []any{"203.0.113.0/24", "2001:db8::1/64"}, want: []string{`agent "clinic-a": AllowedSourceRanges[1]: "2001:db8::1/64" has host bits set: write 2001:db8::/64`}},
		{name: "bare address", ranges: []any{"203.0.113.7"}, want: []string{`agent "clinic-a": AllowedSourceRanges[0]: "203.0.113.7" is not a CIDR prefix`}},
		{name: "garbage", ranges: []any{"203.0.113.0/24", "office"}, want: []string{`agent "clinic-a": AllowedSourceRanges[1]: "office" is not a CIDR prefix`}},
		{name: "prefix too long", ranges: []any{"203.0.113.0/33"}, want: []string{"AllowedSourceRanges[0]:", "not a CIDR prefix"}},
		{name: "leading zeros", ranges: []any{"010.0.0.0/8"}, want: []string{"AllowedSourceRanges[0]:", "not a CIDR prefix"}},
		{name: "zone", ranges: []any{"fe80::%eth0/64"}, want: []string{"AllowedSourceRanges[0]:", "not a CIDR prefix"}},
		{name: "surrounding space", ranges: []any{" 203.0.113.0/24"}, want: []string{"AllowedSourceRanges[0]:", "not a CIDR prefix"}},
		{name: "IPv4-mapped prefix", ranges: []any{"::ffff:10.0.0.0/104"}, want: []string{`AllowedSourceRanges[0]: "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 prefix`}},
		{name: "listed twice", ranges: []any{"203.0.113.0/24", "10.0.0.0/8", "203.0.113.0/24"}, want: []string{"AllowedSourceRanges[2]: 203.0.113.0/24 listed twice (also [0])"}},
		{name: "not a list", ranges: "203.0.113.0/24", want: []string{"AllowedSourceRanges"}},
		{name: "every problem reported", ranges: []any{"10.0.0.1/8", "x"}, want: []string{"AllowedSourceRanges[0]:", "AllowedSourceRanges[1]:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(doc(t, func(m map[string]any) { agent(m, "clinic-a")["AllowedSourceRanges"] = tt.ranges }))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSourceAllowed(t *testing.T) {
	p, err := Parse(doc(t, func(m map[string]any) {
		agent(m, "clinic-a")["AllowedSourceRanges"] = []any{"203.0.113.0/24", "2001:db8:cafe::/48", "198.51.100.7/32"}
		// clinic-b has none: anywhere.
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		agent, addr string // addr "" = the zero Addr (no client address)
		want        bool
	}{
		{"clinic-a", "203.0.113.1", true},
		{"clinic-a", "203.0.113.255", true},
		{"clinic-a", "203.0.114.1", false},
		{"clinic-a", "198.51.100.7", true},
		{"clinic-a", "198.51.100.8", false},
		{"clinic-a", "2001:db8:cafe:1::9", true},
		{"clinic-a", "2001:db8:caff::9", false},
		{"clinic-a", "::ffff:203.0.113.9", true},    // IPv4-mapped: unmapped first
		{"clinic-a", "::ffff:192.0.2.1", false},     // … and still checked
		{"clinic-a", "2001:db8:cafe::1%eth0", true}, // a zone does not hide the address
		{"clinic-a", "::203.0.113.9", false},        // IPv4-compatible is not IPv4
		{"clinic-a", "", false},                     // no client address: refused where bound
		{"clinic-b", "192.0.2.1", true},             // no ranges: anywhere
		{"clinic-b", "", true},
		{"nobody", "203.0.113.1", false},
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		if got := p.SourceAllowed(tt.agent, a); got != tt.want {
			t.Errorf("SourceAllowed(%s, %s) = %v, want %v", tt.agent, tt.addr, got, tt.want)
		}
	}
}

// TestTerraformKeyRuleMatches: the module's key-line rule (terraform/
// variables.tf, for public_key and each of public_keys) takes exactly the
// lines of the right shape for agentkey: canonical standard base64 of 32
// bytes after ed25519:, or of a 65-byte uncompressed point (0x04 first)
// after ecdsa-p256:. What it cannot see (a point off the curve, a weak
// Ed25519 key) is the broker's to refuse.
func TestTerraformKeyRuleMatches(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "terraform", "variables.tf"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`can\(regex\(("\^\(ed25519:(?:[^"\\]|\\.)*"),\s*k\)\)`).FindSubmatch(src)
	if m == nil {
		t.Fatal(`terraform/variables.tf: no can(regex("^(ed25519:...", k)) key rule`)
	}
	pattern, err := strconv.Unquote(string(m[1]))
	if err != nil {
		t.Fatalf("the rule's HCL string: %v", err)
	}
	rule := regexp.MustCompile(pattern)
	b64 := base64.StdEncoding.EncodeToString
	random := func(n int, first byte) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		if n > 0 {
			b[0] = first
		}
		return b
	}
	type line struct {
		s    string
		want bool
	}
	var lines []line
	for range 200 {
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ecLine, _ := agentkey.FormatECDSAP256(&ec.PublicKey)
		lines = append(lines,
			line{pubKey(t), true},
			line{ecLine, true},
			line{"ed25519:" + b64(random(32, byte(len(lines)))), true},
			line{"ecdsa-p256:" + b64(random(65, 4)), true}, // off the curve: the broker's to refuse
			line{"ed25519:" + b64(random(31, 1)), false},
			line{"ed25519:" + b64(random(33, 1)), false},
			line{"ecdsa-p256:" + b64(random(65, 2)), false}, // compressed-point tag
			line{"ecdsa-p256:" + b64(random(64, 4)), false},
			line{"ecdsa-p256:" + b64(random(33, 3)), false},
			line{"ed25519:" + base64.RawStdEncoding.EncodeToString(random(32, 1)), false},
		)
		// Non-zero padding bits: a second spelling of the same key.
		good := pubKey(t)
		last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", good[len(good)-2])
		alt := good[:len(good)-2] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last|1]) + "="
		lines = append(lines, line{alt, false})
	}
	lines = append(lines, line{"ed25519:not-a-key", false}, line{"rsa:AAAA", false}, line{"", false},
		line{pubKey(t) + "\n", false}, line{" " + pubKey(t), false}, line{"ED25519:" + strings.TrimPrefix(pubKey(t), "ed25519:"), false})
	for _, l := range lines {
		if got := rule.MatchString(l.s); got != l.want {
			t.Fatalf("terraform takes %q: %v, want %v", l.s, got, l.want)
		}
		if _, err := agentkey.ParsePublicKey(l.s); err != nil && l.want && !strings.Contains(err.Error(), "curve") {
			t.Fatalf("terraform takes %q, which agentkey refuses for its shape: %v", l.s, err)
		} else if err == nil && !l.want {
			t.Fatalf("agentkey takes %q, which terraform refuses", l.s)
		}
	}
}
