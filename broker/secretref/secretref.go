// Package secretref reads secrets named by a reference: either
// "sm://projects/P/secrets/S/versions/V" (Secret Manager) or a local file
// path, so the same broker runs on Cloud Run and on a laptop. Values are
// cached for a refresh period and can be invalidated at once when Google
// says a credential no longer works.
package secretref

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	gax "github.com/googleapis/gax-go/v2"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxSecretSize bounds a file secret; Secret Manager caps payloads at 64 KiB.
const MaxSecretSize = 64 << 10

// SecretManager is the part of the Secret Manager client the resolver uses.
type SecretManager interface {
	AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest, opts ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error)
}

// Error is a failure to read a secret. Unavailable is true when the cause is
// likely temporary (Secret Manager down, deadline), so callers answer 503.
type Error struct {
	Ref         string
	Unavailable bool
	msg         string
}

func (e *Error) Error() string { return "secret " + e.Ref + ": " + e.msg }

// Reason is the failure without the reference ("not found", "permission
// denied (…)"), for messages that must not name the secret or file, such as
// errors sent to agents. Error, with the reference, is for the broker's log.
func (e *Error) Reason() string { return e.msg }

// Resolver reads and caches secrets.
type Resolver struct {
	// SM is used for sm:// references; nil makes them an error.
	SM SecretManager
	// TTL is how long a value is served before it is re-read.
	TTL time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Log receives one warning per refresh period while a re-read fails and
	// the last value is served (nil: discarded). It names the reference,
	// never a value.
	Log *slog.Logger

	mu    sync.Mutex
	cache map[string]entry
	sf    singleflight.Group
}

type entry struct {
	data    []byte
	fetched time.Time
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Get returns the secret's value. A fresh cached value is returned without
// I/O; after TTL it is re-read, and if that read fails the previous value is
// still returned (an outage, or a newest version disabled by mistake, must
// not break a credential that still works). That failure is logged once and
// the value served for another TTL before the next try, so a broken
// secret costs one read and one log line per refresh period, not one per
// request.
func (r *Resolver) Get(ctx context.Context, ref string) ([]byte, error) {
	r.mu.Lock()
	e, ok := r.cache[ref]
	r.mu.Unlock()
	if ok && r.now().Sub(e.fetched) < r.TTL {
		return e.data, nil
	}
	v, err, _ := r.sf.Do(ref, func() (any, error) {
		data, err := r.read(ctx, ref)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		if r.cache == nil {
			r.cache = map[string]entry{}
		}
		r.cache[ref] = entry{data: data, fetched: r.now()}
		r.mu.Unlock()
		return data, nil
	})
	if err != nil {
		if ok {
			r.keepStale(ref, e, err)
			return e.data, nil
		}
		return nil, err
	}
	return v.([]byte), nil
}

// keepStale serves stale for another TTL and logs why, once per failed
// re-read (concurrent callers that shared the read do not log again).
func (r *Resolver) keepStale(ref string, stale entry, err error) {
	r.mu.Lock()
	cur, present := r.cache[ref]
	first := present && cur.fetched.Equal(stale.fetched)
	if first {
		cur.fetched = r.now()
		r.cache[ref] = cur
	}
	r.mu.Unlock()
	if first && r.Log != nil {
		r.Log.Warn("secret re-read failed; serving the last value read until the next refresh",
			"secret", ref, "error", err.Error(), "read_at", stale.fetched.UTC().Format(time.RFC3339))
	}
}

// Fetch reads ref now, bypassing and not filling the cache.
func (r *Resolver) Fetch(ctx context.Context, ref string) ([]byte, error) {
	return r.read(ctx, ref)
}

// Invalidate forgets ref, so the next Get reads it again and a failure then
// is not papered over by the value Google just refused.
func (r *Resolver) Invalidate(ref string) {
	r.mu.Lock()
	delete(r.cache, ref)
	r.mu.Unlock()
}

func (r *Resolver) read(ctx context.Context, ref string) ([]byte, error) {
	name, ok := strings.CutPrefix(ref, "sm://")
	if !ok {
		return readFile(ref)
	}
	if r.SM == nil {
		return nil, &Error{Ref: ref, msg: "no Secret Manager client configured"}
	}
	// No client-side retries: callers fall back on cached values and
	// agents retry; a retrying client would hold requests until the deadline.
	resp, err := r.SM.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name},
		gax.WithRetry(func() gax.Retryer { return nil }))
	if err != nil {
		return nil, smError(ref, err)
	}
	p := resp.GetPayload()
	if p.DataCrc32C != nil && int64(crc32.Checksum(p.GetData(), crc32.MakeTable(crc32.Castagnoli))) != p.GetDataCrc32C() {
		return nil, &Error{Ref: ref, Unavailable: true, msg: "payload checksum mismatch"}
	}
	return p.GetData(), nil
}

// smError keeps the gRPC code and drops the server's free text.
func smError(ref string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Ref: ref, Unavailable: true, msg: "Secret Manager timed out"}
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal, codes.Aborted, codes.Canceled:
		return &Error{Ref: ref, Unavailable: true, msg: "Secret Manager unavailable (" + st.Code().String() + ")"}
	case codes.NotFound:
		return &Error{Ref: ref, msg: "not found"}
	case codes.PermissionDenied:
		return &Error{Ref: ref, msg: "permission denied (grant roles/secretmanager.secretAccessor to the broker on this secret)"}
	case codes.FailedPrecondition:
		return &Error{Ref: ref, msg: "version is disabled or destroyed"}
	case codes.Unauthenticated:
		return &Error{Ref: ref, msg: "the broker's own credentials were refused"}
	}
	return &Error{Ref: ref, msg: "Secret Manager error (" + st.Code().String() + ")"}
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, &Error{Ref: path, msg: pe.Err.Error()}
		}
		return nil, &Error{Ref: path, msg: "cannot open"}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSecretSize+1))
	if err != nil {
		return nil, &Error{Ref: path, msg: "cannot read"}
	}
	if len(data) > MaxSecretSize {
		return nil, &Error{Ref: path, msg: fmt.Sprintf("larger than %d bytes", MaxSecretSize)}
	}
	return data, nil
}
