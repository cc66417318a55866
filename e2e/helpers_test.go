package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// newStack starts a tapped stack for t and stops it when t ends; on failure
// the ends of the broker and agent logs are printed, tokens redacted.
func newStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	opts.Dir = t.TempDir()
	opts.Bin = bins
	opts.TapBroker = true
	opts.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := stack.New(ctx, opts)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			tokens, _ := s.DistinctTokens()
			for _, f := range []struct{ name, path string }{{"broker", s.BrokerLogPath}, {"agent", s.AgentLogPath}, {"site Orthanc", s.Site.LogPath}} {
				data, _ := os.ReadFile(f.path)
				t.Logf("last lines of the %s log:\n%s", f.name, lastLines(redact(data, tokens), 25))
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("close stack: %v", err)
		}
	})
	return s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func redact(data []byte, tokens []string) []byte {
	for _, tok := range tokens {
		data = bytes.ReplaceAll(data, []byte(tok), []byte("[token "+wire.Fingerprint(tok)+"]"))
	}
	return data
}

func lastLines(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// managedExpiry returns the TokenExpiry of the agent's entry for store in
// the site Orthanc (zero time, false when there is no managed entry).
func managedExpiry(ctx context.Context, s *stack.Stack, store string) (time.Time, bool, error) {
	servers, err := s.ManagedServers(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	srv, ok := servers[store]
	if !ok {
		return time.Time{}, false, nil
	}
	exp, err := time.Parse(time.RFC3339, srv.Properties[orthanc.ExpiryProperty])
	if err != nil {
		return time.Time{}, true, fmt.Errorf("entry %s: TokenExpiry %q: %v", store, srv.Properties[orthanc.ExpiryProperty], err)
	}
	return exp, true, nil
}

// httpStatus returns the status of an orthancproc error (0 if none).
func httpStatus(err error) int {
	var he *orthancproc.HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

// frontGET sends GET url with an optional bearer token straight to the
// fake Healthcare front and returns the status.
func frontGET(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// latestToken is the last token the broker handed out for store.
func latestToken(t *testing.T, s *stack.Stack, store string) string {
	t.Helper()
	issued, err := s.HandedOut()
	if err != nil {
		t.Fatal(err)
	}
	for i := len(issued) - 1; i >= 0; i-- {
		if issued[i].Store == store {
			return issued[i].AccessToken
		}
	}
	t.Fatalf("the broker handed out no token for %s", store)
	return ""
}

// leakSource is one place a token must never appear.
type leakSource struct {
	name string
	data []byte
}

// assertNoTokenLeaks checks scenario 7: every token the broker handed out
// (the tap saw them all, which the audit log and the token server's
// counters confirm) is absent, whole or as a fragment, from the agent's,
// broker's and both Orthancs' logs, GET /dicom-web/servers?expand and the
// agent's /healthz and /metrics; the agent's Orthanc password and the
// service-account private keys are absent too.
func assertNoTokenLeaks(t *testing.T, s *stack.Stack) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	// Every token the broker handed out, with its plaintext: each audit
	// line names one by fingerprint, and the token server minted it.
	tokens, err := s.DistinctTokens()
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) == 0 {
		t.Fatal("the broker handed out no token at all")
	}
	// The answers the agent received are all sealed, and there are exactly
	// as many token items as audit lines: each issuance reached the agent
	// with its line, and nothing was handed out unaudited.
	auditLines, err := s.Audit()
	if err != nil {
		t.Fatal(err)
	}
	items := s.Tap.Issued()
	for _, it := range items {
		if it.Plaintext || it.Sealed == "" {
			t.Errorf("token item for %s was not sealed", it.Store)
		}
	}
	if len(items) != len(auditLines) {
		t.Errorf("the agent received %d token items; the broker wrote %d audit lines", len(items), len(auditLines))
	}
	minted := 0
	for _, st := range s.Stores() {
		minted += s.Cloud.Tokens.Minted(st.ServiceAccount)
	}
	if minted != len(tokens) {
		t.Errorf("the token server minted %d tokens for the stores; the agent received %d distinct ones", minted, len(tokens))
	}

	var sources []leakSource
	add := func(name string, data []byte, err error) {
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			return
		}
		if len(data) == 0 {
			t.Errorf("%s is empty: nothing to check", name)
		}
		sources = append(sources, leakSource{name, data})
	}
	data, err := s.AgentLogs()
	add("agent log", data, err)
	data, err = s.BrokerLogs()
	add("broker log", data, err)
	data, err = s.Site.Logs()
	add("site Orthanc log", data, err)
	data, err = s.CloudOrthanc.Logs()
	add("cloud Orthanc log", data, err)
	raw, _, err := stack.Servers(ctx, s.Site)
	add("GET /dicom-web/servers?expand", raw, err)
	for _, path := range []string{"/healthz", "/metrics"} {
		data, err := httpGet(ctx, "http://"+s.AgentListen+path)
		add("agent "+path, data, err)
	}
	// The record of re-sent uploads, once the agent has written one.
	if data, err := os.ReadFile(s.AgentStatePath); err == nil {
		sources = append(sources, leakSource{"agent state file", data})
	}

	type secret struct{ label, value string }
	var secrets []secret
	for _, tok := range tokens {
		fp := wire.Fingerprint(tok)
		secrets = append(secrets, secret{"token " + fp, tok})
		// A fragment catches a truncated token in a log line.
		core := strings.TrimPrefix(tok, "ya29.")
		if len(core) > 16 {
			secrets = append(secrets, secret{"a 16-character fragment of token " + fp, core[len(core)-16:]})
		}
	}
	pw, err := os.ReadFile(s.AgentPasswordPath)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, secret{"the agent's Orthanc password", strings.TrimSpace(string(pw))})
	for _, st := range s.Stores() {
		for _, line := range privateKeyLines(t, s, st) {
			secrets = append(secrets, secret{"a private-key line of " + st.ServiceAccount, line})
		}
	}
	for _, src := range sources {
		for _, sec := range secrets {
			if n := bytes.Count(src.data, []byte(sec.value)); n > 0 {
				t.Errorf("%s found %d time(s) in %s", sec.label, n, src.name)
			}
		}
	}
	t.Logf("checked %d tokens (%d audit lines) against %d sources: none found", len(tokens), len(auditLines), len(sources))
}

func privateKeyLines(t *testing.T, s *stack.Stack, st stack.Store) []string {
	t.Helper()
	if strings.HasPrefix(st.Secret, "sm://") {
		return nil
	}
	data, err := os.ReadFile(st.Secret)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(data, &cred); err != nil || cred.PrivateKey == "" {
		t.Fatalf("key file of %s: no private_key", st.Name)
	}
	var out []string
	for _, l := range strings.Split(cred.PrivateKey, "\n") {
		if len(l) >= 40 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
