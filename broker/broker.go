// Package broker assembles the token broker from its parts:
//
//	policy/      what exists and who may use it (authorisation)
//	policysrc/   where the policy is read from, re-read by change
//	agentauth/   who is calling (EdDSA JWT assertions, replay protection)
//	clientaddr/  where a request comes from (TCP peer or X-Forwarded-For)
//	ratelimit/   how often each agent may call
//	secretref/   reading sm:// or file secrets, cached
//	mint/        turning an account into a fresh Google token
//	tokencache/  one token per account, coalesced mints
//	audit/       one log line per issued token
//	api/         the HTTP API
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	credentials "cloud.google.com/go/iam/credentials/apiv1"
	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"cloud.google.com/go/storage"
	gax "github.com/googleapis/gax-go/v2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/api"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/audit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/mint"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policysrc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/ratelimit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/secretref"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// Config is the broker's environment.
type Config struct {
	// PolicyRef is BROKER_CONFIG: sm://projects/P/secrets/S/versions/V, a
	// file path, a directory of fragments or gs://BUCKET/PREFIX/ (see
	// broker/policysrc).
	PolicyRef string
	// Refresh is BROKER_REFRESH: how often the policy and secrets are re-read.
	Refresh time.Duration
	// MinRemaining is BROKER_MIN_REMAINING (see tokencache).
	MinRemaining time.Duration
	// RateLimit and RateBurst are BROKER_RATE_LIMIT (requests per second per
	// agent, 0 = off) and BROKER_RATE_BURST.
	RateLimit float64
	RateBurst int
	// TrustedProxyHops is BROKER_TRUSTED_PROXY_HOPS: how many proxies in
	// front of the broker append to X-Forwarded-For (broker/clientaddr).
	// 0, the default, takes the TCP peer as the client; behind Cloud Run's
	// front end the peer is Google's proxy, so the Terraform module sets it.
	TrustedProxyHops int
	// SecretManagerEndpoint (BROKER_SECRETMANAGER_ENDPOINT) points the Secret
	// Manager client at a plain-gRPC fake. Tests and the demo only.
	SecretManagerEndpoint string
	// StorageEndpoint (BROKER_STORAGE_ENDPOINT) points the Cloud Storage
	// client read for gs:// policies at a fake's JSON API
	// (http://127.0.0.1:PORT), without authentication. Tests and the demo only.
	StorageEndpoint string
	// IAMCredentialsEndpoint (BROKER_IAMCREDENTIALS_ENDPOINT) points the IAM
	// Credentials REST client at a fake. Tests and the demo only.
	IAMCredentialsEndpoint string
	// AuthorizedUserTokenURI (BROKER_AUTHORIZED_USER_TOKEN_URI) is the token
	// endpoint for inline AuthorizedUser* credentials. Tests and the demo only.
	AuthorizedUserTokenURI string

	// Log receives operational and audit lines (default: Cloud Logging JSON on stdout).
	Log *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults.
const (
	DefaultRefresh   = 5 * time.Minute
	DefaultRateLimit = 10
	DefaultRateBurst = 20
)

// ConfigFromEnv reads the broker's environment variables.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		PolicyRef:              getenv("BROKER_CONFIG"),
		Refresh:                DefaultRefresh,
		MinRemaining:           tokencache.DefaultMinRemaining,
		RateLimit:              DefaultRateLimit,
		RateBurst:              DefaultRateBurst,
		SecretManagerEndpoint:  getenv("BROKER_SECRETMANAGER_ENDPOINT"),
		StorageEndpoint:        getenv("BROKER_STORAGE_ENDPOINT"),
		IAMCredentialsEndpoint: getenv("BROKER_IAMCREDENTIALS_ENDPOINT"),
		AuthorizedUserTokenURI: getenv("BROKER_AUTHORIZED_USER_TOKEN_URI"),
	}
	var errs []error
	if c.PolicyRef == "" {
		errs = append(errs, errors.New("BROKER_CONFIG: required (sm://projects/P/secrets/S/versions/V, a file, a directory of fragments or gs://BUCKET/PREFIX/)"))
	}
	durations := []struct {
		name string
		dst  *time.Duration
		min  time.Duration
	}{
		{"BROKER_REFRESH", &c.Refresh, time.Second},
		{"BROKER_MIN_REMAINING", &c.MinRemaining, 0},
	}
	for _, d := range durations {
		if v := getenv(d.name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed < d.min {
				errs = append(errs, fmt.Errorf("%s: %q is not a duration of at least %s", d.name, v, d.min))
				continue
			}
			*d.dst = parsed
		}
	}
	if v := getenv("BROKER_RATE_LIMIT"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			errs = append(errs, fmt.Errorf("BROKER_RATE_LIMIT: %q is not a non-negative number", v))
		}
		c.RateLimit = f
	}
	if v := getenv("BROKER_RATE_BURST"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("BROKER_RATE_BURST: %q is not a positive integer", v))
		}
		c.RateBurst = n
	}
	if v := getenv("BROKER_TRUSTED_PROXY_HOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("BROKER_TRUSTED_PROXY_HOPS: %q is not a whole number >= 0 (0: the TCP peer is the client; N: the Nth X-Forwarded-For entry from the right)", logtext.Truncate(v, 32)))
		}
		c.TrustedProxyHops = n
	}
	return c, errors.Join(errs...)
}

// Broker is a running broker: an HTTP handler plus the background policy
// refresh.
type Broker struct {
	handler http.Handler
	watcher *policy.Watcher
	tokens  *tokencache.Cache
	secrets *secretref.Resolver
	cancel  context.CancelFunc
	done    chan struct{}
	closers []io.Closer

	refreshMu sync.Mutex // one refresh at a time, so caches follow the latest policy
	// Under refreshMu: retainFor, the policy the caches were last made to
	// follow, and how many of its accounts use each secret reference.
	retainFor *policy.Policy
	refs      map[string]int // secret reference → accounts of retainFor using it
}

// New loads the policy (an invalid one is an error naming the account,
// agent and field) and starts re-reading it every c.Refresh.
func New(ctx context.Context, c Config) (*Broker, error) {
	if c.Log == nil {
		c.Log = cloudlog.New(os.Stdout, slog.LevelInfo)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Refresh <= 0 {
		c.Refresh = DefaultRefresh
	}
	b := &Broker{done: make(chan struct{}), refs: map[string]int{}}
	sm := newLazySecretManager(c.SecretManagerEndpoint)
	iam := newLazyIAM(c.IAMCredentialsEndpoint)
	gcs := newLazyStorage(c.StorageEndpoint)
	b.closers = append(b.closers, sm, iam, gcs)

	secrets := &secretref.Resolver{SM: sm, TTL: c.Refresh, Now: c.Now, Log: c.Log}
	load, src, err := policysrc.Open(c.PolicyRef, policysrc.Options{Fetch: secrets.Fetch, Storage: gcs.get, Log: c.Log})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.closers = append(b.closers, src)
	watcher, err := policy.NewLoaderWatcher(ctx, load, c.Log)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.watcher, b.secrets = watcher, secrets
	b.tokens = tokencache.New(c.MinRemaining, c.Now)
	b.follow(watcher.Current())
	minter := &mint.Minter{
		Secrets:                secrets,
		IAM:                    iam,
		AuthorizedUserTokenURI: c.AuthorizedUserTokenURI,
		Now:                    c.Now,
	}

	limiter := ratelimit.New(c.RateLimit, c.RateBurst, c.Now)
	b.handler = &api.Server{
		Policy:  watcher.Current,
		Auth:    agentauth.NewVerifier(agentauth.Options{Now: c.Now, Budget: limiter}),
		Limiter: limiter,
		Tokens:  accountTokens{cache: b.tokens, mint: minter},
		Audit:   audit.New(c.Log.Handler()),
		Log:     c.Log,

		TrustedProxyHops: c.TrustedProxyHops,
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	go func() {
		defer close(b.done)
		t := time.NewTicker(c.Refresh)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				_ = b.refresh(runCtx) // logged by the watcher; the last good policy stays
			}
		}
	}()
	p := watcher.Current()
	c.Log.Info("broker ready", "accounts", p.NumAccounts(), "agents", p.NumAgents(), "refresh", c.Refresh.String())
	return b, nil
}

// ServeHTTP serves the broker API.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.handler.ServeHTTP(w, r) }

// Reload does now what the refresh ticker does every Config.Refresh: re-read
// the policy and drop cached tokens and secrets it no longer uses (tests,
// and SIGHUP-style operations). A refused document is the error; the last
// good policy stays in force.
func (b *Broker) Reload(ctx context.Context) error { return b.refresh(ctx) }

// refresh re-reads the policy and makes both caches follow the policy in
// force: tokens of removed or redefined accounts, expired tokens and secrets
// no account names any more are forgotten, so memory follows the policy and
// a re-added account starts from a fresh read. It runs after a refused
// document too (the policy in force is then the last good one), which still
// drops expired tokens.
//
// Only what changed is looked at (policy.AccountChanges: after an
// incremental reload, the few shards it wrote), so a one-fragment change
// in a 30,000-account policy costs no pass over the fleet. A request that
// was already using the old policy may still cache a token or secret of
// an account just removed: the token goes when it expires; such a secret
// stays until the account's reference is used and dropped again.
func (b *Broker) refresh(ctx context.Context) error {
	b.refreshMu.Lock()
	defer b.refreshMu.Unlock()
	err := b.watcher.Reload(ctx)
	b.follow(b.watcher.Current())
	b.tokens.DropExpired()
	return err
}

// follow makes the caches follow p (under refreshMu, or before the broker
// serves).
func (b *Broker) follow(p *policy.Policy) {
	if p != b.retainFor {
		gone, added := p.AccountChanges(b.retainFor)
		if len(b.refs) == 0 {
			b.refs = make(map[string]int, len(added)) // the first policy: grown once, not doubled 15 times
		}
		for _, a := range added {
			if ref := a.SecretRef(); ref != "" {
				b.refs[ref]++
			}
		}
		for _, a := range gone {
			b.tokens.Forget(a.CacheKey())
			if ref := a.SecretRef(); ref != "" {
				if b.refs[ref]--; b.refs[ref] <= 0 {
					delete(b.refs, ref)
					b.secrets.Invalidate(ref)
				}
			}
		}
		b.retainFor = p
	}
}

// accountTokens is api.Tokens: the token cache keyed by each account's
// CacheKey, minting through broker/mint.
type accountTokens struct {
	cache *tokencache.Cache
	mint  *mint.Minter
}

// Token returns a's token from the cache, minting on a miss.
func (t accountTokens) Token(ctx context.Context, a *policy.Account) (tokencache.Result, error) {
	return t.cache.Token(ctx, a.CacheKey(), accountSource{t.mint, a})
}

// accountSource mints for one account.
type accountSource struct {
	mint    *mint.Minter
	account *policy.Account
}

// Token mints a new token for the account.
func (s accountSource) Token(ctx context.Context) (*oauth2.Token, error) {
	return s.mint.Mint(ctx, s.account)
}

// Close stops the refresh loop and closes Google clients.
func (b *Broker) Close() error {
	if b.cancel != nil {
		b.cancel()
		<-b.done
	}
	var errs []error
	for _, c := range b.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// lazy creates a Google client on first use and again after a failed
// attempt, so a broker whose policy and secrets are files needs no Google
// credentials at all, and a metadata server that was briefly down at the
// first mint does not disable keyless accounts for the instance's life.
type lazy[T io.Closer] struct {
	what   string
	create func(context.Context) (T, error)
	mu     sync.Mutex
	client T
	ok     bool
}

func (l *lazy[T]) get(ctx context.Context) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ok {
		c, err := l.create(context.WithoutCancel(ctx))
		if err != nil {
			var zero T
			return zero, errors.New("cannot create the " + l.what + " client: " + sanitize(err))
		}
		l.client, l.ok = c, true
	}
	return l.client, nil
}

func (l *lazy[T]) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ok {
		return l.client.Close()
	}
	return nil
}

type lazySecretManager struct{ lazy[*secretmanager.Client] }

func newLazySecretManager(endpoint string) *lazySecretManager {
	return &lazySecretManager{lazy[*secretmanager.Client]{what: "Secret Manager", create: func(ctx context.Context) (*secretmanager.Client, error) {
		var o []option.ClientOption
		if endpoint != "" {
			o = append(o, option.WithEndpoint(endpoint), option.WithoutAuthentication(),
				option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
		}
		return secretmanager.NewClient(ctx, o...)
	}}}
}

func (l *lazySecretManager) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest, opts ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.AccessSecretVersion(ctx, req, opts...)
}

// newLazyStorage is the Cloud Storage client for gs:// policies, created
// at the first listing (a broker whose policy lives elsewhere never makes one).
func newLazyStorage(endpoint string) *lazy[*storage.Client] {
	return &lazy[*storage.Client]{what: "Cloud Storage", create: func(ctx context.Context) (*storage.Client, error) {
		return policysrc.NewStorageClient(ctx, endpoint)
	}}
}

// CheckPolicy reads and validates the policy at ref (any BROKER_CONFIG
// form) exactly as New does, with the clients c names, and returns it; the
// error lists every problem (for fragments, of every fragment). It is
// "broker check-policy".
func CheckPolicy(ctx context.Context, c Config, ref string) (*policy.Policy, error) {
	sm := newLazySecretManager(c.SecretManagerEndpoint)
	gcs := newLazyStorage(c.StorageEndpoint)
	defer sm.Close()
	defer gcs.Close()
	secrets := &secretref.Resolver{SM: sm}
	load, src, err := policysrc.Open(ref, policysrc.Options{Fetch: secrets.Fetch, Storage: gcs.get, Log: c.Log})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return load(ctx)
}

// lazyIAM authenticates as the broker's own identity: the metadata server
// on Cloud Run, Application Default Credentials on a laptop.
type lazyIAM struct {
	lazy[*credentials.IamCredentialsClient]
}

func newLazyIAM(endpoint string) *lazyIAM {
	return &lazyIAM{lazy[*credentials.IamCredentialsClient]{what: "IAM Credentials", create: func(ctx context.Context) (*credentials.IamCredentialsClient, error) {
		creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/cloud-platform")
		if err != nil {
			return nil, err
		}
		o := []option.ClientOption{option.WithTokenSource(creds.TokenSource)}
		if endpoint != "" {
			o = append(o, option.WithEndpoint(endpoint))
		}
		return credentials.NewIamCredentialsRESTClient(ctx, o...)
	}}}
}

func (l *lazyIAM) GenerateAccessToken(ctx context.Context, req *credentialspb.GenerateAccessTokenRequest, opts ...gax.CallOption) (*credentialspb.GenerateAccessTokenResponse, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.GenerateAccessToken(ctx, req, opts...)
}

// sanitize keeps the first line of a client construction error; these
// carry no secrets but can be long.
func sanitize(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return logtext.Truncate(s, 200)
}
