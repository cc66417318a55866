package app

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/atomicfile"
)

// rotatingBroker is the reconcile loop's broker client. It signs with the
// agent's key and, while a next key (Broker.KeyFile + ".next", made by
// "agent rotate-key") exists, tries that key first on each store poll
// (GET /v1/stores). As soon as the broker accepts the next key the agent
// makes it its key: the file is renamed over Broker.KeyFile (atomically;
// the old key file, and with it an old TPM key's only copy, is gone) and
// every later request is signed with it. Until then a refused attempt is
// answered by the same request signed with the current key, so the
// rotation never fails a sync.
type rotatingBroker struct {
	log      *slog.Logger
	opts     brokerclient.Options // Key is set per client
	keyFile  string               // "" (a hand-built configuration): no rotation
	device   string
	agentID  string
	accounts []string
	// onRotate is called, without the lock, after a rotation.
	onRotate func(old, cur *keys.Key)

	mu   sync.Mutex
	cur  *brokerclient.Client
	key  *keys.Key
	next *nextKey
}

// retryUnusableNext is how long a next key file that could not be used
// (a TPM that did not answer, say) is left alone before it is tried again,
// when the file itself has not changed.
var retryUnusableNext = 10 * time.Minute

// nextKey is the last look at the next key file.
type nextKey struct {
	size   int64
	mod    time.Time
	key    *keys.Key
	client *brokerclient.Client
	// err is why the file cannot be used (a warning once per version of
	// the file and error), and failedAt when it was found.
	err      error
	failedAt time.Time
	// refusals counts the broker's refusals of the key.
	refusals int
}

func newRotatingBroker(o brokerclient.Options, key *keys.Key, keyFile, device, agentID string, accounts []string,
	log *slog.Logger, onRotate func(old, cur *keys.Key)) (*rotatingBroker, error) {
	o.Key = key.Signer
	c, err := brokerclient.New(o)
	if err != nil {
		return nil, err
	}
	return &rotatingBroker{log: log, opts: o, keyFile: keyFile, device: device, agentID: agentID, accounts: accounts,
		onRotate: onRotate, cur: c, key: key}, nil
}

// Key is the key requests are signed with now.
func (r *rotatingBroker) Key() *keys.Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.key
}

func (r *rotatingBroker) client() *brokerclient.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Stores asks for the store list, with the next key first while there is
// one (see rotatingBroker).
func (r *rotatingBroker) Stores(ctx context.Context) ([]brokerclient.Store, error) {
	if n := r.nextCandidate(); n != nil {
		stores, err := n.client.Stores(ctx)
		switch {
		case err == nil:
			r.promote(n)
			return stores, nil
		case ctx.Err() != nil, brokerclient.Reason(err) == brokerclient.ReasonTransport:
			// The broker is out of reach: the current key would not fare better.
			return nil, err
		}
		r.refused(n, err)
	}
	return r.client().Stores(ctx)
}

// Tokens asks for tokens with the current key.
func (r *rotatingBroker) Tokens(ctx context.Context, names []string) (*brokerclient.Tokens, error) {
	return r.client().Tokens(ctx, names)
}

// CloseIdleConnections closes the pooled connections of every client (the
// loop calls it on a broker that a reload replaces).
func (r *rotatingBroker) CloseIdleConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur.CloseIdleConnections()
	if r.next != nil && r.next.client != nil {
		r.next.client.CloseIdleConnections()
	}
}

// nextCandidate returns the next key to try, loading it when its file is
// new or has changed, or nil when there is none to try.
func (r *rotatingBroker) nextCandidate() *nextKey {
	if r.keyFile == "" {
		return nil
	}
	path := keys.NextPath(r.keyFile)
	fi, err := os.Stat(path)
	r.mu.Lock()
	if err != nil {
		if r.next != nil && r.next.client != nil {
			r.next.client.CloseIdleConnections()
		}
		r.next = nil
		r.mu.Unlock()
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("the next agent key cannot be read; keeping the current key", "key_file", path, "error", err.Error())
		}
		return nil
	}
	prev := r.next
	if n := prev; n != nil && n.size == fi.Size() && n.mod.Equal(fi.ModTime()) &&
		(n.err == nil || time.Since(n.failedAt) < retryUnusableNext) {
		r.mu.Unlock()
		if n.err != nil {
			return nil
		}
		return n
	}
	cur, o := r.key, r.opts
	r.mu.Unlock()

	// Loaded without the lock: a TPM key is checked by one signature.
	n := &nextKey{size: fi.Size(), mod: fi.ModTime()}
	k, err := keys.Load(path, r.device)
	if err == nil && k.Public == cur.Public {
		err = errors.New("it is the current key")
	}
	if err == nil {
		o.Key = k.Signer
		n.client, err = brokerclient.New(o)
	}
	n.key, n.err = k, err
	if err != nil {
		n.failedAt = time.Now()
	}
	r.mu.Lock()
	if r.next != nil && r.next.client != nil {
		r.next.client.CloseIdleConnections()
	}
	r.next = n
	r.mu.Unlock()
	if err != nil {
		level := slog.LevelWarn
		if prev != nil && prev.err != nil && prev.size == n.size && prev.mod.Equal(n.mod) && prev.err.Error() == err.Error() {
			level = slog.LevelDebug // the same file, the same failure: said already
		}
		r.log.Log(context.Background(), level, "the next agent key cannot be used; keeping the current key",
			"key_file", path, "error", err.Error())
		return nil
	}
	r.log.Info("trying the next agent key on each store poll", "key_file", path, "kind", k.Kind, "public_key", k.Public)
	return n
}

// refused notes that the broker did not accept the next key (yet): the
// first time at info, then at debug, since the operator has to register it.
func (r *rotatingBroker) refused(n *nextKey, err error) {
	r.mu.Lock()
	n.refusals++
	first := n.refusals == 1
	r.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelInfo
	}
	r.log.Log(context.Background(), level, "the broker does not accept the next agent key yet; signing with the current key",
		"public_key", n.key.Public, "error", err.Error())
}

// promote makes n the agent's key: renames its file over the key file and
// signs everything with it from now on. A failed rename is logged and
// tried again at the next poll (the next key works; so does the old one).
func (r *rotatingBroker) promote(n *nextKey) {
	r.mu.Lock()
	if r.next != n {
		r.mu.Unlock()
		return
	}
	next := keys.NextPath(r.keyFile)
	if err := os.Rename(next, r.keyFile); err != nil {
		// Another process of this agent ("once" next to "run") may have
		// made the same move already.
		k, lerr := keys.Load(r.keyFile, r.device)
		if !errors.Is(err, fs.ErrNotExist) || lerr != nil || k.Public != n.key.Public {
			r.mu.Unlock()
			r.log.Error("the broker accepts the next agent key but it cannot be made the key; trying again at the next store poll",
				"key_file", r.keyFile, "error", err.Error())
			return
		}
	}
	_ = atomicfile.SyncDir(filepath.Dir(r.keyFile)) // makes the rename durable where the system allows it
	old := r.key
	r.cur.CloseIdleConnections()
	r.cur, r.key, r.next = n.client, n.key, nil
	r.mu.Unlock()
	r.log.Info("agent key rotated", "key_file", r.keyFile, "kind", n.key.Kind, "public_key", n.key.Public,
		"old_public_key", old.Public,
		"policy_entry", keys.PolicyMember(r.agentID, []string{n.key.Public}, r.accounts),
		"next_step", "the broker accepts the new key: remove the old one from the agent's policy entry")
	if r.onRotate != nil {
		r.onRotate(old, n.key)
	}
}
