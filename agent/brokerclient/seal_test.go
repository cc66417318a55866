package brokerclient

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// recipientOf reads the cnf key of the request's assertion, as a broker
// does (without checking the signature: these are the client's tests).
func recipientOf(t testing.TB, r *http.Request) *ecdh.PublicKey {
	t.Helper()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var c assertion.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatalf("assertion: %v", err)
	}
	if c.Cnf == nil {
		return nil
	}
	pub, err := c.Cnf.JWK.X25519()
	if err != nil {
		t.Fatalf("cnf: %v", err)
	}
	return pub
}

// sealWith returns answer (any JSON-able shape of a token answer) with each
// token item's access_token replaced by sealed_access_token, sealed to
// pub for the item's store, as the broker answers.
func sealWith(t testing.TB, pub *ecdh.PublicKey, answer any) map[string]any {
	t.Helper()
	b, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	items, _ := m["tokens"].([]any)
	for _, it := range items {
		item, ok := it.(map[string]any)
		tok, isStr := item["access_token"].(string)
		if !ok || !isStr {
			continue
		}
		store, _ := item["store"].(string)
		sealed, err := tokenseal.Seal(pub, store, tok)
		if err != nil {
			t.Fatal(err)
		}
		delete(item, "access_token")
		item["sealed_access_token"] = sealed
	}
	return m
}

// sealingServer answers POST /v1/tokens with answer() sealed to each
// request's own cnf key.
func sealingServer(t *testing.T, answer func() any) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(sealWith(t, recipientOf(t, r), answer()))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Every token request carries a fresh X25519 key in its assertion's cnf;
// GET /v1/stores carries none.
func TestTokenRequestsCarryAFreshKey(t *testing.T) {
	_, priv := newKey(t)
	var keys []*ecdh.PublicKey
	var storesKey *ecdh.PublicKey
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathStores {
			storesKey = recipientOf(t, r)
			w.Write([]byte(`{"stores":[]}`))
			return
		}
		keys = append(keys, recipientOf(t, r))
		w.Write([]byte(`{"tokens":[],"errors":[]}`))
	}))
	defer srv.Close()
	c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
	for range 3 {
		if _, err := c.Tokens(context.Background(), []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Stores(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || keys[0] == nil || keys[0].Equal(keys[1]) || keys[1].Equal(keys[2]) || keys[0].Equal(keys[2]) {
		t.Fatalf("token requests' keys %v: want three different ones", keys)
	}
	if storesKey != nil {
		t.Fatal("GET /v1/stores carried a cnf key")
	}
}

// An answer with a plaintext access_token (an old or wrong broker) is
// refused whole, naming the field and never the value; a token sealed to
// another key, or for another store, is refused as an item.
func TestSealedAnswersOnly(t *testing.T) {
	_, priv := newKey(t)
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	const tok = "ya29.plaintext-from-an-old-broker"
	good := "https://healthcare.googleapis.com/v1/x/dicomWeb/"
	other, _ := ecdh.X25519().GenerateKey(rand.Reader)

	t.Run("plaintext access_token", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"tokens": []any{map[string]string{
				"store": "a", "access_token": tok, "token_type": "Bearer", "expires_at": exp, "dicomweb_url": good}}})
		}))
		defer srv.Close()
		c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
		res, err := c.Tokens(context.Background(), []string{"a"})
		if err == nil || res != nil || Reason(err) != ReasonBadResponse {
			t.Fatalf("res %+v, err %v", res, err)
		}
		if !strings.Contains(err.Error(), "access_token") || strings.Contains(err.Error(), tok) {
			t.Fatalf("error %q must name the field and not the value", err)
		}
	})
	t.Run("sealed to another key or moved to another store", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mine := recipientOf(t, r)
			toOther, _ := tokenseal.Seal(other.PublicKey(), "a", tok)
			moved, _ := tokenseal.Seal(mine, "c", tok) // c's token in b's item
			ok, _ := tokenseal.Seal(mine, "c", tok)
			item := func(store, sealed string) map[string]string {
				return map[string]string{"store": store, "sealed_access_token": sealed, "token_type": "Bearer", "expires_at": exp, "dicomweb_url": good}
			}
			json.NewEncoder(w).Encode(map[string]any{"tokens": []any{item("a", toOther), item("b", moved), item("c", ok)}})
		}))
		defer srv.Close()
		c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
		res, err := c.Tokens(context.Background(), []string{"a", "b", "c"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tokens) != 1 || res.Tokens[0].Store != "c" || string(res.Tokens[0].AccessToken) != tok {
			t.Fatalf("tokens %+v", res.Tokens)
		}
		if len(res.Errors) != 2 {
			t.Fatalf("errors %+v", res.Errors)
		}
		for _, e := range res.Errors {
			if e.Code != CodeBadResponse || !strings.Contains(e.Message, "cannot be opened") || strings.Contains(e.Message, tok) {
				t.Errorf("error %+v", e)
			}
		}
	})
}
