package broker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
)

// TestRefreshFollowsWhatChanged: the ticker's refresh drops at once the
// token of every account removed or redefined and the secret no remaining
// account uses, and keeps everything else (a secret still shared by an
// account that stays, the tokens of unchanged and new accounts).
func TestRefreshFollowsWhatChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	secret := func(name string) string { return filepath.Join(dir, name+".json") }
	write := func(accounts map[string]string) { // store → secret file
		accts := map[string]any{}
		for store, sec := range accounts {
			accts[store] = map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": store,
				"ServiceAccountSecret": secret(sec)}
		}
		b, _ := json.Marshal(map[string]any{"Audience": "https://b.example/", "Accounts": accts})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"sa", "shared"} {
		if err := os.WriteFile(secret(name), []byte(`{}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(map[string]string{"a": "sa", "c": "shared", "d": "shared", "e": "shared"})
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	b, err := New(context.Background(), Config{PolicyRef: path, Refresh: time.Hour, Now: func() time.Time { return now },
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	key := func(store string) string { return b.watcher.Current().Account(store).CacheKey() }
	put := func(store string) {
		if _, err := b.tokens.Token(ctx, key(store), tokencache.SourceFunc(func(context.Context) (*oauth2.Token, error) {
			return &oauth2.Token{AccessToken: "x", Expiry: now.Add(time.Hour)}, nil
		})); err != nil {
			t.Fatal(err)
		}
	}
	cached := func(k string) bool {
		r, err := b.tokens.Token(ctx, k, tokencache.SourceFunc(func(context.Context) (*oauth2.Token, error) {
			return nil, errors.New("not cached")
		}))
		return err == nil && r.Cached
	}
	secretCached := func(name string) bool { _, err := b.secrets.Get(ctx, secret(name)); return err == nil }

	for _, s := range []string{"a", "c", "d", "e"} {
		put(s)
	}
	before := map[string]string{"a": key("a"), "c": key("c"), "d": key("d"), "e": key("e")}
	for _, name := range []string{"sa", "shared"} {
		if !secretCached(name) {
			t.Fatalf("secret %s not read", name)
		}
		os.Remove(secret(name)) // from now on only the cache has them
	}

	// a removed (its secret with it), d removed (its secret still c's),
	// e redefined, b added.
	write(map[string]string{"b": "shared", "c": "shared", "e": "e2"})
	if err := b.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	put("b")
	for store, want := range map[string]bool{"a": false, "c": true, "d": false, "e": false} {
		if got := cached(before[store]); got != want {
			t.Errorf("token of %s cached: %v, want %v", store, got, want)
		}
	}
	if !cached(key("b")) {
		t.Error("the new account's token was dropped")
	}
	if secretCached("sa") {
		t.Error("the secret only the removed account used is still cached")
	}
	if !secretCached("shared") {
		t.Error("a secret still used by c and b was dropped")
	}

	// Nothing changed: nothing dropped.
	if err := b.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !cached(key("b")) || !cached(key("c")) {
		t.Error("an unchanged refresh dropped tokens")
	}
}
