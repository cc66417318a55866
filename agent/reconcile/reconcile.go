// Package reconcile is the agent's loop: it decides when a token is pulled
// from the broker (refresh before expiry, retry with backoff), pushes it to
// Orthanc, re-pushes entries that Orthanc lost or that are stale from the
// cached token without calling the broker, and deletes entries of stores
// the broker no longer grants. Entries without this agent's marker are
// never touched. After each check of Orthanc it lets the resubmit package
// send failed uploads of managed servers again once a fresh token is
// pushed (ResubmitFailedJobs).
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/resubmit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Broker is what the loop needs from the broker (brokerclient.Client).
type Broker interface {
	Stores(ctx context.Context) ([]brokerclient.Store, error)
	Tokens(ctx context.Context, names []string) (*brokerclient.Tokens, error)
}

// Orthanc is what the loop needs from Orthanc (orthanc.Client): its
// DICOMweb servers, the allow-list its PutServer enforces, and its jobs
// (resubmit.Orthanc), which the loop hands to the resubmit Watcher when
// Settings.ResubmitFailedJobs is set. Every part is in the one interface,
// so an Orthanc that lacks one does not compile; nothing is found out at
// run time.
type Orthanc interface {
	ListServers(ctx context.Context) (map[string]orthanc.Server, error)
	PutServer(ctx context.Context, name string, d orthanc.Definition) error
	DeleteServer(ctx context.Context, name string) error
	// DicomWebHosts is the gate PutServer enforces. The loop asks it
	// before a token is asked for or cached, so it neither gets a token it
	// could not push nor reports the refusal as an Orthanc failure; being
	// the client's own, it cannot disagree with the last gate.
	DicomWebHosts() *urlrule.AllowList
	resubmit.Orthanc
}

// Settings are the configuration values the loop uses, as config.Resolve
// produced them. The loop sets no defaults of its own: a zero duration
// (only a hand-built Settings has one) means config's default for it.
type Settings struct {
	AgentID string
	// Accounts limits the managed stores; empty: every granted store.
	Accounts      []string
	ServerOptions map[string]json.RawMessage
	RefreshMargin time.Duration
	CheckInterval time.Duration
	// StoresInterval is how often the store list is asked for when no
	// token is due.
	StoresInterval time.Duration
	// ResubmitFailedJobs turns on re-sending failed uploads (package
	// resubmit); ResubmitStatePath is its state file. A hand-built
	// Settings leaves it off.
	ResubmitFailedJobs bool
	ResubmitStatePath  string
}

// Options build a Reconciler.
type Options struct {
	Broker   Broker
	Orthanc  Orthanc
	Settings Settings
	// Recorder receives the loop's events for metrics; nil discards them.
	Recorder Recorder
	// Log receives structured events; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Jitter returns values in [0, 1); nil means math/rand/v2.Float64.
	Jitter func() float64
	// After waits in Run; nil means a real timer.
	After func(time.Duration) <-chan time.Time
}

// Update replaces the clients and settings (SIGHUP reload).
type Update struct {
	Broker   Broker
	Orthanc  Orthanc
	Settings Settings
}

// store is the loop's state for one store.
type store struct {
	name    string
	url     string // dicomweb_url from GET /v1/stores
	granted bool
	token   *brokerclient.Token
	// refreshAt is when the cached token is due for refresh.
	refreshAt time.Time
	// pushed: Orthanc held our entry with the cached token at the last check.
	pushed   bool
	lastPush time.Time
	conflict bool
	tokenErr string // last broker failure for this store
	pushErr  string // last Orthanc failure for this store
	// refused is set while the store's dicomweb_url is not allowed
	// (AllowedDicomWebHosts): nothing is pushed and nothing deleted for
	// it, so Orthanc keeps whatever entry it has.
	refused string
	// freshSince is when Orthanc was first seen holding the token whose
	// fingerprint is freshFP (pushed then, or found already there): an
	// upload that failed on a job created before it was refused an older
	// token and may be sent again. A re-push of the same token (Orthanc
	// restarted) does not move it.
	freshSince time.Time
	freshFP    string
}

// Reconciler keeps Orthanc's DICOMweb servers in step with the broker.
// SyncBroker, CheckOrthanc, Once and Run must be called from one goroutine
// at a time; Status may be called from any goroutine.
type Reconciler struct {
	broker  Broker
	orth    Orthanc
	set     Settings
	log     *slog.Logger
	now     func() time.Time
	jitter  func() float64
	after   func(time.Duration) <-chan time.Time
	retry   *retry
	metrics Recorder
	reload  chan Update
	resub   *resubmit.Watcher

	stores map[string]*store
	// badNames are the store names from the broker that fail the name
	// rule, mapped to the text shown for them. They are kept apart from
	// stores, so no Orthanc call can ever see them.
	badNames   map[string]string
	synced     bool // the broker has told us the stores at least once
	brokerUp   bool
	brokerSeen bool // brokerUp has been set at least once
	brokerOK   time.Time
	brokerErr  string
	nextBroker time.Time
	nextCheck  time.Time
	orthUp     bool
	orthSeen   bool
	orthErr    string
	lastCheck  time.Time
	forcePush  bool

	mu        sync.Mutex
	published Status
}

// New builds a Reconciler.
func New(o Options) *Reconciler {
	r := &Reconciler{
		broker: o.Broker, orth: o.Orthanc, set: configDefaults(o.Settings),
		metrics: o.Recorder, log: o.Log, now: o.Now, jitter: o.Jitter, after: o.After,
		stores:   map[string]*store{},
		badNames: map[string]string{},
		reload:   make(chan Update, 1),
	}
	if r.metrics == nil {
		r.metrics = nopRecorder{}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.jitter == nil {
		r.jitter = rand.Float64
	}
	if r.after == nil {
		r.after = func(d time.Duration) <-chan time.Time { return time.NewTimer(d).C }
	}
	r.retry = newRetry(r.jitter)
	r.resub = resubmit.New(resubmit.Options{Log: r.log, Now: r.now, Resubmitted: func() { r.metrics.Resubmitted() }})
	r.publish()
	return r
}

// configDefaults gives a hand-built Settings (tests, the bench) config's
// defaults, so a zero interval cannot make the loop spin. The values are
// config's: the loop has none of its own.
func configDefaults(s Settings) Settings {
	if s.StoresInterval <= 0 {
		s.StoresInterval = config.DefaultStoresInterval
	}
	if s.CheckInterval <= 0 {
		s.CheckInterval = config.DefaultCheckInterval
	}
	if s.RefreshMargin <= 0 {
		s.RefreshMargin = config.DefaultRefreshMargin
	}
	return s
}

// Reload queues new clients and settings; Run applies them and then syncs
// at once, re-pushing every entry. A pending, unapplied update is replaced.
func (r *Reconciler) Reload(u Update) {
	for {
		select {
		case r.reload <- u:
			return
		default:
		}
		select {
		case <-r.reload:
		default:
		}
	}
}

// idleCloser is a Broker that pools connections (brokerclient.Client).
type idleCloser interface{ CloseIdleConnections() }

func (r *Reconciler) apply(u Update) {
	// The replaced broker client is not used again: release its pool now
	// rather than at its idle timeout (harmless if u reuses it).
	if old, ok := r.broker.(idleCloser); ok {
		old.CloseIdleConnections()
	}
	r.broker, r.orth, r.set = u.Broker, u.Orthanc, configDefaults(u.Settings)
	r.forcePush = true
	r.nextBroker = r.now()
	r.retry.reset()
	r.log.Info("configuration reloaded", "accounts", r.set.Accounts, "allowed_dicomweb_hosts", r.orth.DicomWebHosts().Hosts(),
		"resubmit_failed_jobs", r.set.ResubmitFailedJobs)
}

// Run syncs until ctx is cancelled (SIGTERM), then returns nil. Pushed
// entries are left in Orthanc: they stay valid until their tokens expire.
func (r *Reconciler) Run(ctx context.Context) error {
	r.nextBroker, r.nextCheck = r.now(), r.now()
	for {
		if ctx.Err() != nil {
			return nil
		}
		now := r.now()
		switch {
		case !now.Before(r.nextBroker):
			_ = r.SyncBroker(ctx) // also checks Orthanc
		case !now.Before(r.nextCheck):
			_ = r.CheckOrthanc(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		wake := r.nextBroker
		if r.nextCheck.Before(wake) {
			wake = r.nextCheck
		}
		wait := wake.Sub(r.now())
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case u := <-r.reload:
			r.apply(u)
		case <-r.after(wait):
		}
	}
}

// Once does one full sync (store list, tokens for every store, push to
// Orthanc) and returns an error unless every managed store ends up with a
// pushed, unexpired token.
func (r *Reconciler) Once(ctx context.Context) error {
	err := r.SyncBroker(ctx)
	s := r.Status()
	if err == nil && s.Healthy {
		return nil
	}
	var probs []string
	if err != nil {
		probs = append(probs, r.redact(err.Error()))
	}
	for _, st := range s.Stores {
		if !st.Usable(s.Time) {
			p := st.Store + ": " + st.State
			if st.LastError != "" {
				p += " (" + st.LastError + ")"
			}
			probs = append(probs, p)
		}
	}
	if !s.Healthy && len(s.Stores) == 0 {
		probs = append(probs, s.Reason)
	}
	return errors.New(strings.Join(probs, "; "))
}

// SyncBroker asks the broker for the store list and for tokens of the
// stores that are due (none cached, refresh time reached, URL changed),
// updates the cache, schedules the next call, then runs CheckOrthanc to
// push new tokens and delete revoked stores.
func (r *Reconciler) SyncBroker(ctx context.Context) error {
	defer r.publish()
	now := r.now()
	granted, err := r.broker.Stores(ctx)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not a broker failure
	}
	if err != nil {
		r.brokerFailed(now, err)
		_ = r.CheckOrthanc(ctx)
		return err
	}
	r.applyGrants(granted)

	// Refused stores (host not allowed, bad name) are not failures to
	// retry: nothing but a change of policy or configuration fixes them.
	// They show in the status and keep the agent unhealthy instead.
	var due []string
	for _, st := range r.sorted() {
		if !st.granted {
			continue
		}
		// A store the broker lists with a URL that is not allowed gets no
		// token asked for: it could not be pushed.
		if !r.allowed(st, st.url) {
			continue
		}
		if st.token == nil || !now.Before(st.refreshAt) || st.token.DicomWebURL != st.url || st.refused != "" {
			due = append(due, st.name)
		}
	}
	storeFailed, retryable := false, false
	if len(due) > 0 {
		res, err := r.broker.Tokens(ctx, due)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.brokerFailed(now, err)
			_ = r.CheckOrthanc(ctx)
			return err
		}
		storeFailed, retryable = r.applyTokens(now, due, res)
	}
	r.brokerSucceeded(now)
	if storeFailed {
		r.nextBroker = r.earliestRefresh(now, now.Add(r.retry.next(retryable)))
	} else {
		r.retry.reset()
		r.nextBroker = r.earliestRefresh(now, now.Add(r.set.StoresInterval))
	}
	if err := r.CheckOrthanc(ctx); err != nil {
		return err
	}
	if storeFailed {
		return errors.New("the broker issued no token for some stores")
	}
	return nil
}

// applyGrants turns the broker's store list into the managed set.
func (r *Reconciler) applyGrants(list []brokerclient.Store) {
	granted := make(map[string]string, len(list))
	for _, s := range list {
		granted[s.Name] = s.DicomWebURL
	}
	wanted := r.set.Accounts
	if len(wanted) == 0 {
		wanted = make([]string, 0, len(granted))
		for n := range granted {
			wanted = append(wanted, n)
		}
	}
	keep := map[string]bool{}
	bad := map[string]string{}
	for _, name := range wanted {
		if !wire.ValidStoreName(name) {
			shown := logtext.Truncate(logtext.Clip(name), 80)
			if _, known := r.badNames[name]; !known {
				r.log.Error("store name from the broker refused: it does not match the store name rule, so it can never be an Orthanc server name",
					"store", shown, "rule", wire.StoreNameRule)
			}
			bad[name] = shown
			r.metrics.Failure(ReasonBadStoreName)
			continue
		}
		keep[name] = true
		st := r.stores[name]
		if st == nil {
			st = &store{name: name}
			r.stores[name] = st
		}
		u, ok := granted[name]
		if !ok {
			why := "the broker does not grant this store to agent " + r.set.AgentID
			if st.tokenErr != why {
				r.log.Warn("store listed in Accounts is not granted to this agent by the broker", "store", name)
			}
			r.revoke(st, why)
			continue
		}
		if !st.granted {
			r.log.Info("managing store", "store", name, "dicomweb_url", u)
		}
		st.granted, st.url = true, u
	}
	for name, st := range r.stores {
		if !keep[name] {
			if st.granted {
				r.log.Info("store no longer granted; its Orthanc entry will be deleted", "store", name)
			}
			delete(r.stores, name)
		}
	}
	r.badNames = bad
	r.synced = true
}

// allowed asks the gate of the Orthanc client (the allow-list its
// PutServer enforces) whether raw, a dicomweb_url from the broker for st,
// may carry st's token, and refuses st if not. It is the loop's one
// question to the gate, asked where the broker's URLs come in (the store
// list, the token answer); the client itself is the last gate, and push
// turns its refusal into the same state.
func (r *Reconciler) allowed(st *store, raw string) bool {
	err := r.orth.DicomWebHosts().Check(raw)
	if err == nil {
		return true
	}
	var re *urlrule.RefusedError
	if !errors.As(err, &re) {
		re = &urlrule.RefusedError{HostPort: "(unparseable URL)"}
	}
	r.refuseHost(st, re)
	return false
}

// refuseHost puts st in the error state for a dicomweb_url the allow-list
// refused (AllowedDicomWebHosts): no token is pushed for it and its
// Orthanc entry, if any, is left as it is.
func (r *Reconciler) refuseHost(st *store, re *urlrule.RefusedError) {
	hostPort := logtext.Truncate(logtext.Clip(re.HostPort), 200)
	msg := fmt.Sprintf("%s: %v; no token is pushed for this store (an entry pushed before is left as it is)", ReasonHostNotAllowed, re)
	if msg != st.refused {
		r.log.Error("store refused: its dicomweb_url host is not in AllowedDicomWebHosts; not pushing its token",
			"store", st.name, "host", hostPort, "error", re.Error(), "allowed_dicomweb_hosts", r.orth.DicomWebHosts().Hosts())
	}
	st.refused, st.pushed = msg, false
	r.metrics.Failure(ReasonHostNotAllowed)
}

// revoke forgets a store's token; CheckOrthanc then deletes its entry.
func (r *Reconciler) revoke(st *store, why string) {
	st.granted, st.token, st.pushed, st.conflict = false, nil, false, false
	st.tokenErr, st.pushErr, st.refused = why, "", ""
}

// applyTokens caches the tokens of POST /v1/tokens and records per-store
// errors; it reports whether a store failed and whether that is retryable.
func (r *Reconciler) applyTokens(now time.Time, asked []string, res *brokerclient.Tokens) (failed, retryable bool) {
	answered := map[string]bool{}
	for _, t := range res.Tokens {
		st := r.stores[t.Store]
		if st == nil || answered[t.Store] {
			continue
		}
		answered[t.Store] = true
		if !t.ExpiresAt.After(now) {
			r.storeError(st, brokerclient.CodeBadResponse, "the broker issued an already expired token (check the clocks)")
			failed, retryable = true, true
			continue
		}
		if !r.allowed(st, t.DicomWebURL) {
			continue // the token is dropped, not cached
		}
		if st.refused != "" {
			r.log.Info("store's dicomweb_url host allowed again", "store", st.name)
		}
		st.refused = ""
		tok := t
		st.token = &tok
		st.refreshAt = RefreshAt(now, t.ExpiresAt, r.set.RefreshMargin, r.jitter())
		if st.tokenErr != "" {
			r.log.Info("store token available again", "store", st.name)
		}
		st.tokenErr = ""
		r.log.Info("token received", "store", st.name, "expires_at", t.ExpiresAt.UTC(),
			"refresh_at", st.refreshAt.UTC(), wire.FingerprintKey, wire.Fingerprint(string(t.AccessToken)))
	}
	for _, e := range res.Errors {
		st := r.stores[e.Store]
		if st == nil || answered[e.Store] {
			continue
		}
		answered[e.Store] = true
		if e.Code == wire.CodeForbidden {
			r.log.Warn("store revoked by the broker; deleting its Orthanc entry", "store", st.name)
			r.revoke(st, "forbidden: the broker no longer grants this store")
			continue
		}
		r.storeError(st, e.Code, e.Message)
		failed = true
		if e.Code != wire.CodeBadRequest && e.Code != wire.CodeUnauthenticated {
			retryable = true
		}
	}
	for _, name := range asked {
		if st := r.stores[name]; st != nil && !answered[name] {
			r.storeError(st, brokerclient.CodeBadResponse, "the broker's answer has neither a token nor an error for this store")
			failed, retryable = true, true
		}
	}
	return failed, retryable
}

// storeError records a per-store broker failure, logging only changes.
func (r *Reconciler) storeError(st *store, code, msg string) {
	text := r.redact(code + ": " + msg)
	if text != st.tokenErr {
		r.log.Warn("broker could not issue a token for store; keeping the cached one", "store", st.name, "code", code, "error", r.redact(msg))
	}
	st.tokenErr = text
	r.metrics.Failure(ReasonStoreError)
}

func (r *Reconciler) brokerFailed(now time.Time, err error) {
	retryable := brokerclient.IsRetryable(err)
	reason := brokerclient.Reason(err)
	r.metrics.Failure(reason)
	r.brokerErr = r.redact(err.Error())
	delay := r.retry.next(retryable)
	r.nextBroker = r.earliestRefresh(now, now.Add(delay))
	if r.brokerUp || !r.brokerSeen {
		level := slog.LevelWarn
		if !retryable {
			level = slog.LevelError
		}
		r.log.Log(context.Background(), level, "broker call failed; keeping pushed tokens and retrying with backoff",
			"reason", reason, "retryable", retryable, "error", r.brokerErr)
	}
	r.brokerUp, r.brokerSeen = false, true
}

func (r *Reconciler) brokerSucceeded(now time.Time) {
	if !r.brokerUp && r.brokerSeen {
		r.log.Info("broker reachable again")
	}
	r.brokerUp, r.brokerSeen = true, true
	r.brokerOK, r.brokerErr = now, ""
	r.metrics.BrokerSuccess(now)
}

// earliestRefresh returns the earlier of t and the first refresh that is
// still ahead of now. A refresh already due is not counted: its retry is
// paced by the backoff, not by the past refresh time (that would spin).
func (r *Reconciler) earliestRefresh(now, t time.Time) time.Time {
	for _, st := range r.stores {
		if st.granted && st.token != nil && st.refreshAt.After(now) && st.refreshAt.Before(t) {
			t = st.refreshAt
		}
	}
	return t
}

// CheckOrthanc lists Orthanc's DICOMweb servers, deletes managed entries
// of stores no longer granted and pushes the cached token where a managed
// entry is missing or stale. It never calls the broker and never touches
// an entry without this agent's marker. It returns the first failure.
func (r *Reconciler) CheckOrthanc(ctx context.Context) error {
	defer r.publish()
	now := r.now()
	r.lastCheck = now
	r.nextCheck = now.Add(r.set.CheckInterval)
	servers, err := r.orth.ListServers(ctx)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not an Orthanc failure
	}
	if err != nil {
		r.orthancFailed(err)
		for _, st := range r.stores {
			st.pushed = false // cannot vouch for entries we cannot see
		}
		return err
	}
	r.orthancOK()
	delErr := r.deleteRevoked(ctx, servers)
	pushErr := r.pushGranted(ctx, now, servers)
	if !orthanc.Unreachable(delErr) && !orthanc.Unreachable(pushErr) {
		r.checkJobs(ctx, now)
	}
	if delErr != nil {
		return delErr
	}
	return pushErr
}

// checkJobs lets the resubmit Watcher look at Orthanc's jobs. It is told
// every managed server (granted, not in conflict with an entry the agent
// does not own) and, for those with a usable pushed token, since when
// Orthanc holds it. Its failures are counted but do not fail the check:
// the tokens are what the check is for.
func (r *Reconciler) checkJobs(ctx context.Context, now time.Time) {
	servers := map[string]time.Time{}
	for _, st := range r.stores {
		if !st.granted || st.conflict {
			continue
		}
		var fresh time.Time
		if st.pushed && st.refused == "" && st.token != nil && now.Before(st.token.ExpiresAt) {
			fresh = st.freshSince
		}
		servers[st.name] = fresh
	}
	cfg := resubmit.Config{Enabled: r.set.ResubmitFailedJobs, StatePath: r.set.ResubmitStatePath}
	if err := r.resub.Check(ctx, r.orth, cfg, servers); err != nil && ctx.Err() == nil {
		r.metrics.Failure(orthancReason(err))
	}
}

// markFresh records that Orthanc holds st's cached token from now on,
// unless it already did.
func (r *Reconciler) markFresh(now time.Time, st *store) {
	if fp := wire.Fingerprint(string(st.token.AccessToken)); fp != st.freshFP {
		st.freshFP, st.freshSince = fp, now
	}
}

// deleteRevoked deletes the entries this agent manages whose store is no
// longer granted. Before the first store list it deletes nothing: "not
// granted" is not known yet.
func (r *Reconciler) deleteRevoked(ctx context.Context, servers map[string]orthanc.Server) error {
	if !r.synced {
		return nil
	}
	var firstErr error
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		if !servers[name].ManagedBy(r.set.AgentID) || !wire.ValidStoreName(name) {
			continue // not ours, or a name this agent never pushes: leave it alone
		}
		if st := r.stores[name]; st != nil && st.granted {
			continue
		}
		err := r.orth.DeleteServer(ctx, name)
		if err != nil && !errors.Is(err, orthanc.ErrNoSuchServer) {
			r.metrics.Failure(orthancReason(err))
			r.log.Warn("could not delete Orthanc entry of a store no longer granted", "server", name, "error", r.redact(err.Error()))
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		r.metrics.Delete()
		r.log.Info("deleted Orthanc entry of a store no longer granted", "server", name)
	}
	return firstErr
}

// pushGranted pushes the cached token of every granted store whose entry
// is missing or stale, and records name conflicts. A forced re-push
// (reload) stays pending until every store is pushed.
func (r *Reconciler) pushGranted(ctx context.Context, now time.Time, servers map[string]orthanc.Server) error {
	var firstErr error
	allOK := true
	for _, st := range r.sorted() {
		if !st.granted {
			continue
		}
		srv, exists := servers[st.name]
		if exists && !srv.ManagedBy(r.set.AgentID) {
			if !st.conflict {
				r.metrics.Failure(ReasonNameConflict)
				r.log.Error("Orthanc already has a DICOMweb server of this name that the agent does not manage; leaving it alone",
					"server", st.name, "owner", srv.Properties[orthanc.MarkerProperty])
			}
			st.conflict, st.pushed = true, false
			st.pushErr = "Orthanc has a DICOMweb server named " + st.name + " that this agent does not manage"
			allOK = false
			continue
		}
		if st.conflict {
			r.log.Info("name conflict resolved", "server", st.name)
		}
		st.conflict = false
		if st.refused != "" {
			// Leave whatever Orthanc has. Not a failed push: a forced
			// re-push of the other stores must not stay pending for it.
			st.pushed = false
			continue
		}
		if st.token == nil || !now.Before(st.token.ExpiresAt) {
			// Nothing valid to push; leave whatever Orthanc has.
			st.pushed, st.pushErr = false, ""
			continue
		}
		why := r.pushReason(st, srv, exists)
		if why == "" {
			st.pushed = true
			r.markFresh(now, st)
			continue
		}
		if err := r.push(ctx, now, st, why); err != nil {
			allOK = false
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if allOK {
		r.forcePush = false
	}
	return firstErr
}

// pushReason says why st's entry must be pushed ("" when Orthanc's entry
// srv already carries the cached token).
func (r *Reconciler) pushReason(st *store, srv orthanc.Server, exists bool) string {
	switch {
	case !exists:
		return "missing"
	case srv.Properties[orthanc.TokenProperty] != wire.Fingerprint(string(st.token.AccessToken)),
		srv.Properties[orthanc.ExpiryProperty] != orthanc.FormatExpiry(st.token.ExpiresAt):
		return "token_changed"
	case srv.URL != st.token.DicomWebURL:
		return "url_changed"
	case r.forcePush:
		return "config_reloaded"
	}
	return ""
}

// push writes st's whole entry with its cached token. The client refuses
// a URL its allow-list does not take (a reload may have narrowed the list
// since the token was cached): that is the store's refusal, not a failed
// push, so the entry Orthanc has is left as it is and a forced re-push of
// the other stores does not stay pending for it.
func (r *Reconciler) push(ctx context.Context, now time.Time, st *store, why string) error {
	err := r.orth.PutServer(ctx, st.name, orthanc.Definition{
		URL:     st.token.DicomWebURL,
		Token:   string(st.token.AccessToken),
		Options: r.set.ServerOptions,
		Marker:  r.set.AgentID,
		Expiry:  st.token.ExpiresAt,
	})
	var re *urlrule.RefusedError
	if errors.As(err, &re) {
		r.refuseHost(st, re)
		return nil
	}
	if err != nil {
		msg := r.redact(err.Error())
		if msg != st.pushErr {
			r.log.Warn("could not push token to Orthanc", "server", st.name, "error", msg)
		}
		r.metrics.Failure(orthancReason(err))
		st.pushed, st.pushErr = false, msg
		return err
	}
	r.metrics.Push()
	st.pushed, st.pushErr, st.lastPush = true, "", now
	r.markFresh(now, st)
	r.log.Info("pushed token to Orthanc", "server", st.name, "reason", why,
		"expires_at", st.token.ExpiresAt.UTC(), wire.FingerprintKey, wire.Fingerprint(string(st.token.AccessToken)))
	return nil
}

func orthancReason(err error) string {
	if orthanc.Unreachable(err) {
		return ReasonOrthancUnreachable
	}
	return ReasonOrthancError
}

func (r *Reconciler) orthancFailed(err error) {
	r.metrics.Failure(orthancReason(err))
	r.metrics.OrthancReachable(false)
	msg := r.redact(err.Error())
	if r.orthUp || !r.orthSeen {
		r.log.Warn("Orthanc is not answering; will re-push when it is back", "error", msg)
	}
	r.orthUp, r.orthSeen, r.orthErr = false, true, msg
}

func (r *Reconciler) orthancOK() {
	if !r.orthUp && r.orthSeen {
		r.log.Info("Orthanc reachable again")
	}
	r.orthUp, r.orthSeen, r.orthErr = true, true, ""
	r.metrics.OrthancReachable(true)
}

func (r *Reconciler) sorted() []*store {
	out := make([]*store, 0, len(r.stores))
	for _, st := range r.stores {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// redact removes every cached token from s. Errors should never carry a
// token in the first place; this is the last line of defence before logs,
// /healthz and metrics.
func (r *Reconciler) redact(s string) string {
	for _, st := range r.stores {
		if st.token != nil && st.token.AccessToken != "" {
			s = strings.ReplaceAll(s, string(st.token.AccessToken), "[redacted]")
		}
	}
	return s
}

// publish copies the state into the snapshot Status serves.
func (r *Reconciler) publish() {
	s := Status{
		AgentID: r.set.AgentID,
		Broker: BrokerStatus{
			Synced: r.synced, Up: r.brokerUp, LastError: r.brokerErr,
			LastSuccess: timePtr(r.brokerOK), NextCall: timePtr(r.nextBroker),
		},
		Orthanc: OrthancStatus{Reachable: r.orthUp, LastCheck: timePtr(r.lastCheck), LastError: r.orthErr},
		Stores:  []StoreStatus{},
	}
	js := r.resub.Status()
	s.Resubmit, s.ResubmitError = js.State, r.redact(js.LastError)
	s.Resubmitted, s.ResubmitWaiting, s.ResubmitGivenUp = js.Resubmitted, js.Waiting, js.GivenUp
	for _, st := range r.sorted() {
		ss := StoreStatus{
			Store: st.name, Server: st.name, DicomWebURL: st.url, Pushed: st.pushed,
			LastPush: timePtr(st.lastPush), LastError: joinErr(st.refused, joinErr(st.tokenErr, st.pushErr)),
		}
		if st.token != nil {
			ss.TokenExpiresAt = timePtr(st.token.ExpiresAt)
			ss.NextRefresh = timePtr(st.refreshAt)
		}
		switch {
		case !st.granted:
			ss.State = StateNotGranted
		case st.refused != "":
			ss.State = StateError
		case st.conflict:
			ss.State = StateConflict
		case st.pushed && st.token != nil:
			ss.State = StateOK // Evaluate turns it into "expired" later
		case st.tokenErr != "" || st.pushErr != "":
			ss.State = StateError
		case st.token != nil && !r.now().Before(st.token.ExpiresAt):
			ss.State = StateExpired
		default:
			ss.State = StatePending
		}
		s.Stores = append(s.Stores, ss)
	}
	for _, name := range slices.Sorted(maps.Keys(r.badNames)) {
		// No Server: such a name never becomes an Orthanc server.
		s.Stores = append(s.Stores, StoreStatus{Store: r.badNames[name], State: StateError,
			LastError: ReasonBadStoreName + ": the broker sent a store name that does not match " + wire.StoreNameRule +
				"; it is never used in an Orthanc URL"})
	}
	r.mu.Lock()
	r.published = s
	r.mu.Unlock()
}

// Status returns the latest snapshot, evaluated now. Safe for concurrent use.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	s := r.published
	s.Stores = append([]StoreStatus(nil), s.Stores...)
	r.mu.Unlock()
	s.Evaluate(r.now())
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func joinErr(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// String makes a store printable without its token (debugging aid).
func (st *store) String() string {
	return fmt.Sprintf("store{%s granted=%v pushed=%v}", st.name, st.granted, st.pushed)
}
