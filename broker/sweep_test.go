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

// TestTickerSweepsAtMostEveryMinute: the ticker's refresh rebuilds the
// sets of cache keys and secret references a changed policy uses at most
// every sweepEvery; in between, a new account's token is kept (only
// expired ones go) and a removed account's token waits for the next
// rebuild. Reload always rebuilds.
func TestTickerSweepsAtMostEveryMinute(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	write := func(stores ...string) {
		accts := map[string]any{}
		for _, s := range stores {
			accts[s] = map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": s,
				"ServiceAccountSecret": filepath.Join(dir, s+".json")}
		}
		b, _ := json.Marshal(map[string]any{"Audience": "https://b.example/", "Accounts": accts})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
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

	if err := b.refresh(ctx, false); err != nil { // the first sweep
		t.Fatal(err)
	}
	put("a")
	keyA := key("a")

	now = now.Add(10 * time.Second)
	write("b") // a removed, b added
	if err := b.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	put("b")
	now = now.Add(10 * time.Second)
	if err := b.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !cached(key("b")) {
		t.Fatal("a new account's token was dropped before the sweep")
	}
	if !cached(keyA) {
		t.Fatal("the sweep ran within a minute of the last one")
	}

	now = now.Add(sweepEvery)
	if err := b.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	if cached(keyA) || !cached(key("b")) {
		t.Fatalf("after a minute: removed account cached %v, kept account cached %v", cached(keyA), cached(key("b")))
	}

	write("b", "c")
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if b.retainFor != b.watcher.Current() {
		t.Fatal("Reload did not rebuild the sets at once")
	}
}
