package api

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/audit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
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
		resp.Tokens[0].TokenType != wire.TokenType ||
		resp.Tokens[0].ExpiresAt != "2030-01-02T04:00:00Z" || !strings.HasSuffix(resp.Tokens[0].DicomWebURL, "/dicomStores/b/dicomWeb/") {
		t.Errorf("tokens %+v", resp.Tokens)
	}
	// Each token is sealed to the assertion's key for its own store.
	for _, tk := range resp.Tokens {
		if got, err := tokenseal.Open(h.recipient, tk.Store, tk.SealedAccessToken); err != nil || got != testToken {
			t.Errorf("%s: opened %q, %v", tk.Store, got, err)
		}
	}
	if _, err := tokenseal.Open(h.recipient, "store-a", resp.Tokens[0].SealedAccessToken); err == nil {
		t.Error("store-b's sealed token opened as store-a's")
	}
	if strings.Contains(rec.Body.String(), testToken) || strings.Contains(rec.Body.String(), `"access_token"`) {
		t.Errorf("plaintext token in the answer: %s", rec.Body)
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

// The audit line does not depend on the log level: a broker whose log is
// set to errors only still writes one line per token before answering.
func TestAuditLinesAtEveryLogLevel(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelWarn, slog.LevelError} {
		h := newHarness(t, nil)
		log := cloudlog.New(h.logs, level)
		h.srv.Log, h.srv.Audit = log, audit.New(log.Handler())
		rec := h.post(t, `{"stores":["store-a","store-b"]}`)
		if rec.Code != 200 {
			t.Fatalf("%v: status %d: %s", level, rec.Code, rec.Body)
		}
		if n := strings.Count(h.logs.String(), `"event":"token_issued"`); n != 2 {
			t.Errorf("%v: %d audit lines for 2 tokens: %s", level, n, h.logs)
		}
	}
}

// Concurrent requests each get their own audit line before their answer.
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
