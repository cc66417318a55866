package api

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/mint"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/ratelimit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/secretref"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

const (
	secretProject = "secret-proj-4711"
	secretEmail   = "broker-sa@secret-proj-4711.iam.gserviceaccount.com"
	secretRefSM   = "sm://projects/" + secretProject + "/secrets/dicom-sa/versions/latest"
)

// fakeSM answers every access with err, whose text names the project and
// the broker's service account as Google's does.
type fakeSM struct{ code codes.Code }

func (f fakeSM) AccessSecretVersion(context.Context, *secretmanagerpb.AccessSecretVersionRequest, ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	return nil, status.Errorf(f.code, "Permission denied on resource projects/%s/secrets/dicom-sa for %s", secretProject, secretEmail)
}

// minted mints through a real mint.Minter, no cache.
type minted struct{ m *mint.Minter }

func (t minted) Token(ctx context.Context, a *policy.Account) (tokencache.Result, error) {
	tok, err := t.m.Mint(ctx, a)
	if err != nil {
		return tokencache.Result{}, err
	}
	return tokencache.Result{Token: tok}, nil
}

// rawErr fails with an error that is not a mint.Error and names everything.
type rawErr struct{}

func (rawErr) Token(context.Context, *policy.Account) (tokencache.Result, error) {
	return tokencache.Result{}, errors.New("open " + secretRefSM + " as " + secretEmail + ": /var/secrets/key.json")
}

// agentSpec is one agent of a test policy.
type agentSpec struct {
	id       string
	priv     ed25519.PrivateKey
	disabled bool
}

func newSpec(t testing.TB, id string, disabled bool) agentSpec {
	t.Helper()
	_, priv, err := agentkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return agentSpec{id: id, priv: priv, disabled: disabled}
}

func (a agentSpec) header(t testing.TB, now time.Time) string {
	t.Helper()
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := assertion.Sign(a.priv, a.id, testAudience, now, assertion.DefaultLifetime, x.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// testPolicy has store-a (secret ref) and the given agents, each granted store-a.
func testPolicy(t testing.TB, ref string, agents ...agentSpec) *policy.Policy {
	t.Helper()
	ags := map[string]any{}
	for _, a := range agents {
		ags[a.id] = map[string]any{"PublicKey": agentkey.FormatPublicKey(a.priv.Public().(ed25519.PublicKey)), "Accounts": []string{"store-a"}, "Disabled": a.disabled}
	}
	doc, _ := json.Marshal(map[string]any{
		"Audience": testAudience,
		"BaseUrl":  "https://healthcare.googleapis.com/v1/",
		"Accounts": map[string]any{"store-a": map[string]any{"Project": secretProject, "Location": "l", "Dataset": "d", "DicomStore": "a", "ServiceAccountSecret": ref}},
		"Agents":   ags,
	})
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// An agent's answer never names the secret, project, service account or
// file behind a failed mint; the broker's log has the detail.
func TestMintFailureDetailOnlyInLog(t *testing.T) {
	tests := []struct {
		name    string
		tokens  Tokens
		code    string
		logHas  string
		message string
	}{
		{"secret not found", minted{&mint.Minter{Secrets: &secretref.Resolver{SM: fakeSM{codes.NotFound}}}}, wire.CodeUpstream, secretRefSM, "credential secret: not found"},
		{"secret denied", minted{&mint.Minter{Secrets: &secretref.Resolver{SM: fakeSM{codes.PermissionDenied}}}}, wire.CodeUpstream, secretRefSM, "credential secret: permission denied"},
		{"not a mint error", rawErr{}, wire.CodeUpstream, secretEmail, "could not obtain a Google token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			a := agentSpec{id: "clinic-a", priv: h.priv}
			p := testPolicy(t, secretRefSM, a)
			h.srv.Policy = func() *policy.Policy { return p }
			h.srv.Tokens = tt.tokens
			rec := h.post(t, `{"stores":["store-a"]}`)
			body := rec.Body.String()
			for _, s := range []string{"sm://", secretProject, secretEmail, "dicom-sa", ".json", "/var/"} {
				if strings.Contains(body, s) {
					t.Errorf("answer names %q: %s", s, body)
				}
			}
			var resp wire.TokenResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.Errors) != 1 {
				t.Fatalf("answer %s (%v)", body, err)
			}
			if e := resp.Errors[0]; e.Code != tt.code || !strings.HasPrefix(e.Message, tt.message) {
				t.Errorf("error %+v, want %s %q", e, tt.code, tt.message)
			}
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "token mint failed" {
					line = m
				}
			}
			if line == nil {
				t.Fatalf("no mint failure log line: %s", h.logs)
			}
			if msg, _ := line["error"].(string); !strings.Contains(msg, tt.logHas) {
				t.Errorf("log line %v does not name %q", line, tt.logHas)
			}
		})
	}
}

// `{"stores":["a"]}]` and the like are refused by the one strict decoder.
func TestTokenRequestTrailingDataRefused(t *testing.T) {
	for _, body := range []string{`{"stores":["store-a"]}]`, `{"stores":["store-a"]}}`, `{"stores":["store-a"]},`, `{"stores":["store-a"]} x`} {
		h := newHarness(t, nil)
		rec := h.post(t, body)
		var e wire.ErrorResponse
		if rec.Code != 400 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != wire.CodeBadRequest {
			t.Errorf("%s: %d %s", body, rec.Code, rec.Body)
		}
		if strings.Contains(h.logs.String(), "token_issued") {
			t.Errorf("%s: token issued", body)
		}
	}
}

// Unknown, disabled and bad-signature requests get byte-identical 401s.
func TestAuthFailuresIdentical(t *testing.T) {
	now := time.Now()
	known := newSpec(t, "clinic-a", false)
	off := newSpec(t, "clinic-off", true)
	stranger := newSpec(t, "stranger", false)
	forger := newSpec(t, "clinic-a", false)
	p := testPolicy(t, "/nonexistent/a.json", known, off)
	h := newHarness(t, nil)
	h.srv.Policy = func() *policy.Policy { return p }
	noCnf, err := assertion.Sign(known.priv, known.id, testAudience, now, assertion.DefaultLifetime, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, header string }{
		{"bad signature", forger.header(t, now)},
		{"unknown id", stranger.header(t, now)},
		{"disabled id", off.header(t, now)},
		{"token request without a key to seal to", "Bearer " + noCnf},
	}
	var first string
	for _, tt := range tests {
		r := newTokenRequest(tt.header, `{}`)
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, r)
		got := rec.Body.String() + "|" + rec.Header().Get("WWW-Authenticate")
		if rec.Code != 401 {
			t.Fatalf("%s: %d", tt.name, rec.Code)
		}
		if first == "" {
			first = got
		} else if got != first {
			t.Errorf("%s: answer %q differs from %q", tt.name, got, first)
		}
	}
	if !strings.Contains(h.logs.String(), `"reason":"no_confirmation_key"`) {
		t.Errorf("the log does not say why the request without cnf was refused:\n%s", h.logs)
	}
	// The refused request's jti was not recorded, and GET /v1/stores needs
	// no key: the same assertion is good for it.
	r := httptest.NewRequest("GET", "/v1/stores", nil)
	r.Header.Set("Authorization", "Bearer "+noCnf)
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, r)
	if rec.Code != 200 {
		t.Errorf("GET /v1/stores without cnf: %d %s", rec.Code, rec.Body)
	}
}

// refuseAll rate-limits everyone.
type refuseAll struct{}

func (refuseAll) Allow(string) bool { return false }

// Requests refused with 429 leave nothing in the replay cache.
func TestRateLimitedNotRecorded(t *testing.T) {
	a := newSpec(t, "clinic-a", false)
	v := agentauth.NewVerifier(agentauth.Options{})
	h := newHarness(t, nil)
	p := testPolicy(t, "/nonexistent/a.json", a)
	h.srv.Policy = func() *policy.Policy { return p }
	h.srv.Auth, h.srv.Limiter = v, refuseAll{}
	for i := range 5 {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, newTokenRequest(a.header(t, time.Now()), `{}`))
		if rec.Code != 429 {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if n := v.ReplayLen(); n != 0 {
		t.Fatalf("replay cache holds %d jtis of refused requests", n)
	}
	// The same assertion is good once the limit allows it, and once only.
	hdr := a.header(t, time.Now())
	h.srv.Limiter = allowAll{}
	for i, want := range []int{200, 401} {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, newTokenRequest(hdr, `{"stores":["store-a"]}`))
		if rec.Code != want {
			t.Fatalf("try %d: %d, want %d", i, rec.Code, want)
		}
	}
}

// A replayed assertion is refused before the rate limit, so whoever holds
// a copy of one cannot spend the agent's budget and lock it out.
func TestReplayDoesNotSpendRateLimit(t *testing.T) {
	a := newSpec(t, "clinic-a", false)
	now := time.Now()
	h := newHarness(t, nil)
	p := testPolicy(t, "/nonexistent/a.json", a)
	h.srv.Policy = func() *policy.Policy { return p }
	h.srv.Auth = agentauth.NewVerifier(agentauth.Options{Now: func() time.Time { return now }})
	h.srv.Limiter = ratelimit.New(0.001, 2, func() time.Time { return now }) // 2 requests, no refill
	captured := a.header(t, now)
	steps := []struct {
		name string
		hdr  string
		want int
	}{
		{"first use", captured, 200},
		{"replay 1", captured, 401},
		{"replay 2", captured, 401},
		{"replay 3", captured, 401},
		{"the agent's next request", a.header(t, now), 200},
		{"over the limit", a.header(t, now), 429},
	}
	for _, st := range steps {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, newTokenRequest(st.hdr, `{"stores":["store-a"]}`))
		if rec.Code != st.want {
			t.Fatalf("%s: %d, want %d: %s", st.name, rec.Code, st.want, rec.Body)
		}
	}
}

// One agent filling its replay share (the total 6 over 2 agents) does not
// lock another agent out; the refusal's log line says why and names the
// agent.
func TestReplayShareIsPerAgent(t *testing.T) {
	noisy := newSpec(t, "noisy", false)
	quiet := newSpec(t, "quiet", false)
	h := newHarness(t, nil)
	p := testPolicy(t, "/nonexistent/a.json", noisy, quiet)
	h.srv.Policy = func() *policy.Policy { return p }
	h.srv.Auth = agentauth.NewVerifier(agentauth.Options{ReplayCapacity: 6, PerAgentReplayCapacity: 100})
	steps := []struct {
		who  agentSpec
		want int
	}{
		{noisy, 200}, {noisy, 200}, {noisy, 200}, {noisy, 401}, {noisy, 401},
		{quiet, 200}, {quiet, 200}, {quiet, 200},
	}
	for i, s := range steps {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, newTokenRequest(s.who.header(t, time.Now()), `{"stores":["store-a"]}`))
		if rec.Code != s.want {
			t.Fatalf("step %d (%s): %d, want %d: %s", i, s.who.id, rec.Code, s.want, rec.Body)
		}
	}
	var refusals int
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, `"reason":"replay_cache_full"`) {
			refusals++
			if !strings.Contains(line, `"claimed_agent":"noisy"`) {
				t.Errorf("refusal does not name the flooding agent: %s", line)
			}
		}
	}
	if refusals != 2 {
		t.Fatalf("%d replay_cache_full lines, want 2:\n%s", refusals, h.logs)
	}
}
