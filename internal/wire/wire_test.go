package wire

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		code string
		want int
	}{
		{CodeBadRequest, http.StatusBadRequest},
		{CodeUnauthenticated, http.StatusUnauthorized},
		{CodeForbidden, http.StatusForbidden},
		{CodeNotFound, http.StatusNotFound},
		{CodeTooLarge, http.StatusRequestEntityTooLarge},
		{CodeRateLimited, http.StatusTooManyRequests},
		{CodeUpstream, http.StatusBadGateway},
		{CodeUnavailable, http.StatusServiceUnavailable},
		{"something_new", http.StatusBadGateway},
	} {
		if got := Status(tc.code); got != tc.want {
			t.Errorf("Status(%q) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	// sha256("ya29.example") starts with these 8 bytes.
	got := Fingerprint("ya29.example")
	if got != "6be4f7d0313f596a" { // printf ya29.example | sha256sum | cut -c1-16
		t.Fatalf("Fingerprint = %q, want 6be4f7d0313f596a", got)
	}
	if got == Fingerprint("ya29.example2") {
		t.Fatal("different tokens share a fingerprint")
	}
	if got != Fingerprint("ya29.example") {
		t.Fatal("Fingerprint is not deterministic")
	}
}

// The JSON member names are the contract of docs/design.md.
func TestJSONShapes(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{StoresResponse{Stores: []Store{{Name: "a", DicomWebURL: "https://h/"}}}, `{"stores":[{"name":"a","dicomweb_url":"https://h/"}]}`},
		{TokenRequest{Stores: []string{"a"}}, `{"stores":["a"]}`},
		{TokenResponse{Tokens: []Token{{Store: "a", SealedAccessToken: "t", TokenType: TokenType, ExpiresAt: "2026-01-01T00:00:00Z", DicomWebURL: "https://h/"}}, Errors: []StoreError{{Store: "b", Code: CodeForbidden, Message: "m"}}},
			`{"tokens":[{"store":"a","sealed_access_token":"t","token_type":"Bearer","expires_at":"2026-01-01T00:00:00Z","dicomweb_url":"https://h/"}],"errors":[{"store":"b","code":"forbidden","message":"m"}]}`},
		{TokenResponse{Error: &ErrorBody{Code: CodeUpstream, Message: "m"}, Tokens: []Token{}, Errors: []StoreError{}}, `{"error":{"code":"upstream","message":"m"},"tokens":[],"errors":[]}`},
		{ErrorResponse{Error: ErrorBody{Code: CodeUnavailable, Message: "m"}}, `{"error":{"code":"unavailable","message":"m"}}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%T:\n got %s\nwant %s", tc.v, b, tc.want)
		}
	}
}
