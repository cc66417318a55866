package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

func TestTokensAnswerAndAudit(t *testing.T) {
	h := newHarness(t, nil)
	rec := h.post(t, `{"stores":["store-b","other","store-a","store-b"]}`)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var resp wire.TokenResponse
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Tokens) != 2 || resp.Tokens[0].Store != "store-b" || resp.Tokens[1].Store != "store-a" ||
		resp.Tokens[0].AccessToken != testToken || resp.Tokens[0].TokenType != wire.TokenType ||
		resp.Tokens[0].ExpiresAt != "2030-01-02T04:00:00Z" || !strings.HasSuffix(resp.Tokens[0].DicomWebURL, "/dicomStores/b/dicomWeb/") {
		t.Errorf("tokens %+v", resp.Tokens)
	}
	if len(resp.Errors) != 1 || resp.Errors[0] != (wire.StoreError{Store: "other", Code: wire.CodeForbidden, Message: "this agent may not use this store"}) || resp.Error != nil {
		t.Errorf("errors %+v, error %+v", resp.Errors, resp.Error)
	}
	logs := h.logs.String()
	if strings.Contains(logs, testToken) {
		t.Fatalf("token in the log: %s", logs)
	}
	var audits []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["event"] == "token_issued" {
			audits = append(audits, m)
		}
	}
	if len(audits) != 2 {
		t.Fatalf("%d audit lines, want 2:\n%s", len(audits), logs)
	}
	for i, store := range []string{"store-b", "store-a"} {
		m := audits[i]
		if m["account"] != store || m["agent"] != "clinic-a" || m[wire.FingerprintKey] != wire.Fingerprint(testToken) ||
			m["severity"] != "INFO" || m["message"] != "token issued" || m["expires_at"] != "2030-01-02T04:00:00Z" || m["cached"] != true {
			t.Errorf("audit line %v", m)
		}
	}
}

func TestNothingIssuedStatus(t *testing.T) {
	h := newHarness(t, nil)
	rec := h.post(t, `{"stores":["other"]}`)
	var resp wire.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 403 || resp.Error == nil || resp.Error.Code != wire.CodeForbidden || len(resp.Tokens) != 0 || resp.Tokens == nil {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
	if strings.Contains(h.logs.String(), "token_issued") {
		t.Errorf("audit line without a token: %s", h.logs)
	}
}

// A token whose audit line cannot be written is not handed out.
func TestAuditFailureFailsRequest(t *testing.T) {
	h := newHarness(t, failingWriter{})
	rec := h.post(t, `{"stores":["store-a"]}`)
	if rec.Code != 503 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), testToken) || strings.Contains(rec.Body.String(), "access_token") {
		t.Fatalf("token handed out without its audit line: %s", rec.Body)
	}
	var e wire.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != wire.CodeUnavailable {
		t.Errorf("body %s (%v)", rec.Body, err)
	}
}

// Concurrent requests share audit writes, and each still gets its own line
// before its answer.
func TestConcurrentTokensEachAudited(t *testing.T) {
	h := newHarness(t, nil)
	const n = 64
	var wg sync.WaitGroup
	hdrs := make([]string, n)
	for i := range hdrs {
		hdrs[i] = h.assertion(t)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newTokenRequest(hdrs[i], `{"stores":["store-a"]}`)
			w := &discardWriter{h: make(map[string][]string)}
			before := strings.Count(h.logs.String(), `"token_issued"`)
			h.srv.ServeHTTP(w, r)
			if w.status != 200 {
				t.Errorf("status %d", w.status)
			}
			if after := strings.Count(h.logs.String(), `"token_issued"`); after <= before {
				t.Errorf("answered before the audit line was written")
			}
		}()
	}
	wg.Wait()
	if got := strings.Count(h.logs.String(), `"token_issued"`); got != n {
		t.Errorf("%d audit lines, want %d", got, n)
	}
}

func TestTokenResponseEncoding(t *testing.T) {
	tricky := []string{"", "plain", `q"uo\te`, "<script>&amp;", "tab\tnl\ncr\r\b\f\x00\x1f\x7f", "é ü 日本", "\u2028\u2029", "bad\xffutf8\xc3", "ya29." + strings.Repeat("x", 300)}
	var resps []wire.TokenResponse
	resps = append(resps, wire.TokenResponse{Tokens: []wire.Token{}, Errors: []wire.StoreError{}})
	resps = append(resps, wire.TokenResponse{})
	for _, s := range tricky {
		resps = append(resps, wire.TokenResponse{
			Tokens: []wire.Token{{Store: s, AccessToken: s, TokenType: "Bearer", ExpiresAt: s, DicomWebURL: s}, {Store: "b"}},
			Errors: []wire.StoreError{{Store: s, Code: s, Message: s}, {}},
		})
		resps = append(resps, wire.TokenResponse{Error: &wire.ErrorBody{Code: s, Message: s}, Tokens: []wire.Token{}, Errors: []wire.StoreError{{Store: s}}})
	}
	for _, r := range resps {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		if got := appendTokenResponse(nil, &r); string(got) != want.String() {
			t.Errorf("encoding differs:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "a", "<>&", "\u2028", "\xff", "\"\\", "\x00\b\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s want %s", s, got, want)
		}
	})
}

// The fast path of the token request decoder yields exactly what the
// strict decoder does, whenever it accepts a body.
func TestFastPathMatchesDecoder(t *testing.T) {
	for _, body := range []string{`{}`, `{"stores":null}`, `{"stores":[]}`, `{"stores":["a"]}`, `{"stores":["a","b c","~!"]}`,
		`{"stores":[""]}`, `{"stores":["a",""]}`, `{"stores":["a","b",]}`, `{"stores":["a""b"]}`, `{"stores":["a\"]}`, `{"stores":["é"]}`,
		`{"stores":["a"],"stores":["b"]}`, `{"Stores":["a"]}`, `{"stores":["a"]} `, `{"stores":["]}`, `{"stores":["a",`, `{"stores":["a","]}`} {
		checkFastPath(t, []byte(body))
	}
}

func checkFastPath(t *testing.T, body []byte) {
	t.Helper()
	stores, ok := parseTokenRequestFast(body)
	if !ok {
		return
	}
	var req wire.TokenRequest
	if err := strictjson.Unmarshal(body, &req); err != nil {
		t.Fatalf("%s: fast path accepts, decoder refuses: %v", body, err)
	}
	if !reflect.DeepEqual(stores, req.Stores) {
		t.Fatalf("%s: fast path %#v, decoder %#v", body, stores, req.Stores)
	}
}

func FuzzFastPath(f *testing.F) {
	for _, s := range []string{`{}`, `{"stores":["a","b"]}`, `{"stores":["a",""]}`, `{"stores":[]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFastPath(t, body) })
}
