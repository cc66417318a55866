package policy

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
)

// Fetcher reads the raw policy document (from Secret Manager or a file).
type Fetcher func(ctx context.Context) ([]byte, error)

// Loader builds the policy from its source. It returns nil and no error
// when the source has not changed since its last successful call, so an
// unchanged fleet costs no parsing (see broker/policysrc).
type Loader func(ctx context.Context) (*Policy, error)

// Watcher holds the policy in force; the broker calls Reload every
// BROKER_REFRESH. A policy that fails to load or validate is refused and
// the last good one stays. The new policy is built aside and swapped in
// with one atomic store: requests read Current and never wait for a
// reload.
type Watcher struct {
	load Loader
	log  *slog.Logger
	cur  atomic.Pointer[Policy]
}

// NewWatcher loads the first policy from a single document; an invalid
// one is an error so the broker refuses to start with it. Every Reload
// reads and parses the document again.
func NewWatcher(ctx context.Context, fetch Fetcher, log *slog.Logger) (*Watcher, error) {
	return NewLoaderWatcher(ctx, func(ctx context.Context) (*Policy, error) {
		data, err := fetch(ctx)
		if err != nil {
			return nil, errors.Join(errors.New("policy: cannot read document"), err)
		}
		return Parse(data)
	}, log)
}

// NewLoaderWatcher loads the first policy with load; an error, or no
// policy at all, is an error so the broker refuses to start.
func NewLoaderWatcher(ctx context.Context, load Loader, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{load: load, log: log}
	p, err := load(ctx)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("policy: the source returned no policy")
	}
	w.cur.Store(p)
	return w, nil
}

// Current returns the policy in force.
func (w *Watcher) Current() *Policy { return w.cur.Load() }

// Reload reads the policy once more. On error the last good policy stays
// in force and the error is logged and returned; an unchanged source
// changes nothing and logs nothing.
func (w *Watcher) Reload(ctx context.Context) error {
	p, err := w.load(ctx)
	if err != nil {
		w.log.Error("policy reload refused; last good policy stays in force", "error", err.Error())
		return err
	}
	if p == nil {
		return nil
	}
	w.cur.Store(p)
	w.log.Info("policy loaded", "accounts", p.NumAccounts(), "agents", p.NumAgents())
	return nil
}
