package policy

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
)

// Fetcher reads the raw policy document (from Secret Manager or a file).
type Fetcher func(ctx context.Context) ([]byte, error)

// Watcher holds the policy in force; the broker calls Reload every
// BROKER_REFRESH. A document that fails to load or validate is refused and
// the last good one stays.
type Watcher struct {
	fetch Fetcher
	log   *slog.Logger
	cur   atomic.Pointer[Policy]
}

// NewWatcher loads the first policy; an invalid one is an error so the
// broker refuses to start with it.
func NewWatcher(ctx context.Context, fetch Fetcher, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{fetch: fetch, log: log}
	p, err := w.load(ctx)
	if err != nil {
		return nil, err
	}
	w.cur.Store(p)
	return w, nil
}

// Current returns the policy in force.
func (w *Watcher) Current() *Policy { return w.cur.Load() }

// Reload reads the document once more. On error the last good policy stays
// in force and the error is logged and returned.
func (w *Watcher) Reload(ctx context.Context) error {
	p, err := w.load(ctx)
	if err != nil {
		w.log.Error("policy reload refused; last good policy stays in force", "error", err.Error())
		return err
	}
	w.cur.Store(p)
	w.log.Info("policy loaded", "accounts", len(p.Accounts), "agents", len(p.Agents))
	return nil
}

func (w *Watcher) load(ctx context.Context) (*Policy, error) {
	data, err := w.fetch(ctx)
	if err != nil {
		return nil, errors.Join(errors.New("policy: cannot read document"), err)
	}
	return Parse(data)
}
