package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeTokenRequest(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		status int
		stores []string
	}{
		{"empty body means all", "", 0, nil},
		{"empty list means all", `{"stores":[]}`, 0, []string{}},
		{"absent field means all", `{}`, 0, nil},
		{"two stores", `{"stores":["a","b"]}`, 0, []string{"a", "b"}},
		{"unknown field", `{"stores":["a"],"x":1}`, 400, nil},
		{"trailing bracket", `{"stores":["a"]}]`, 400, nil},
		{"trailing brace", `{"stores":["a"]}}`, 400, nil},
		{"wrong type", `{"stores":"a"}`, 400, nil},
		{"not an object", `["a"]`, 400, nil},
		{"trailing object", `{} {}`, 400, nil},
		{"truncated", `{"stores":["a"`, 400, nil},
		{"empty name", `{"stores":[""]}`, 400, nil},
		{"too many", `{"stores":[` + strings.Repeat(`"a",`, MaxStoresPerRequest) + `"a"]}`, 400, nil},
		{"too large", `{"stores":["` + strings.Repeat("a", MaxBodySize) + `"]}`, 413, nil},
		{"white space", " {\n \"stores\" : [ \"a\" , \"b\" ] }\n", 0, []string{"a", "b"}},
		{"escaped name", `{"stores":["a\u0062"]}`, 0, []string{"ab"}},
		{"duplicate key", `{"stores":["a"],"stores":["b"]}`, 400, nil},
		{"case-only key match", `{"Stores":["a"]}`, 400, nil},
		{"escaped key", `{"st\u006fres":["a"]}`, 0, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(tt.body))
			req, status, err := decodeTokenRequest(httptest.NewRecorder(), r)
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, err, tt.status)
			}
			if (err != nil) != (tt.status != 0) {
				t.Fatalf("err = %v with status %d", err, status)
			}
			if tt.status == 0 && strings.Join(req.Stores, ",") != strings.Join(tt.stores, ",") {
				t.Fatalf("stores %q, want %q", req.Stores, tt.stores)
			}
		})
	}
}

func TestErrorsDoNotEchoInput(t *testing.T) {
	const secret = "ya29.secret-looking-value"
	tests := []struct {
		body string
		// Unknown field names are echoed (truncated) so users can fix
		// typos; values never are.
		mayEcho bool
	}{
		{`{"stores":["a"],"` + secret + `":1}`, true},
		{`{"stores":[` + secret + `]}`, false},
		{`{"stores":{"` + secret + `":1}}`, false},
		{`{"stores":["a",1,"` + secret + `"]}`, false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(tt.body))
		_, _, err := decodeTokenRequest(httptest.NewRecorder(), r)
		if err == nil {
			t.Fatalf("%s accepted", tt.body)
		}
		if !tt.mayEcho && strings.Contains(err.Error(), "secret-looking-value") {
			t.Errorf("%s: error echoes a value: %v", tt.body, err)
		}
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	s := &Server{}
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/nope", 404},
		{"POST", "/v1/stores", 405},
		{"GET", "/v1/tokens", 405},
		{"DELETE", "/healthz", 405},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.status || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d %q", tt.method, tt.path, rec.Code, rec.Header().Get("Content-Type"))
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s %s: responses carrying tokens must not be cached", tt.method, tt.path)
		}
	}
}

func FuzzTokenRequest(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"stores":["a","b"]}`, `{"stores":null}`, `{"stores":[1]}`, `{"x":1}`, `{"stores":["\u0000"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/v1/tokens", bytes.NewReader(body))
		req, status, err := decodeTokenRequest(httptest.NewRecorder(), r)
		switch {
		case err == nil && status != 0:
			t.Fatalf("status %d without error", status)
		case err != nil && status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge:
			t.Fatalf("error with status %d", status)
		case err == nil:
			if len(req.Stores) > MaxStoresPerRequest {
				t.Fatalf("%d stores accepted", len(req.Stores))
			}
			for _, n := range req.Stores {
				if n == "" || len(n) > 256 {
					t.Fatalf("bad name %q accepted", n)
				}
			}
		}
	})
}
