// Package policysrc reads the broker's policy from where BROKER_CONFIG
// says, and re-reads it by change:
//
//	sm://projects/P/secrets/S/versions/V   one document in Secret Manager
//	/path/to/policy.json                    one document in a file
//	/path/to/policy.d/                      a directory: every *.json file directly in it is a fragment
//	gs://BUCKET/PREFIX/                     every object under the prefix whose name ends in .json is a fragment
//
// A single document is read and parsed on every reload, as it always was.
// Fragments are listed on every reload (file size and modification time,
// or object generation) and only new or changed ones are read and parsed;
// the parsed fragments are kept, so an unchanged fleet costs one listing
// and no parsing, and a changed one a listing, the changed fragments and a
// merge (broker/policy checks fragments and merges them). On Linux a
// directory is watched with inotify (WatchedDir): between full listings a
// reload states only the entries reported changed, so an unchanged
// directory costs no system call at all.
package policysrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
)

// Options are what Open needs to reach the sources.
type Options struct {
	// Fetch reads a single document (sm:// or a file path), as
	// broker/secretref's Resolver.Fetch does.
	Fetch func(ctx context.Context, ref string) ([]byte, error)
	// Storage returns the Cloud Storage client for gs:// sources; it is
	// called on each listing and read, so it may create the client lazily.
	Storage func(ctx context.Context) (*storage.Client, error)
	// Log receives a directory watcher's failures (nil: slog's default).
	Log *slog.Logger
}

// Kind is the form of a BROKER_CONFIG value.
type Kind int

// The forms of BROKER_CONFIG.
const (
	Document  Kind = iota + 1 // sm:// or a file: one document
	Directory                 // a directory of fragments
	Bucket                    // gs://BUCKET/PREFIX/
)

// bucketRE is a Cloud Storage bucket name (the common, non-domain form).
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$`)

// ParseGS splits gs://BUCKET/PREFIX/ into bucket and prefix. The prefix is
// empty (the whole bucket) or ends in "/", so gs://b/policy/ never picks
// up objects of gs://b/policy-old/.
func ParseGS(ref string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(ref, "gs://")
	if !ok {
		return "", "", fmt.Errorf("%q is not a gs:// reference", ref)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if !bucketRE.MatchString(bucket) {
		return "", "", fmt.Errorf("BROKER_CONFIG: %q: bucket name %q is not valid (3-63 lower-case letters, digits, '-', '_', '.')", ref, bucket)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return "", "", fmt.Errorf("BROKER_CONFIG: %q: the prefix must end in \"/\" (gs://%s/%s/)", ref, bucket, prefix)
	}
	return bucket, prefix, nil
}

// KindOf says which form ref is: gs:// and sm:// by their scheme, a path
// by what is there (a directory, or else a document; a missing file is
// reported when it is read).
func KindOf(ref string) Kind {
	switch {
	case strings.HasPrefix(ref, "gs://"):
		return Bucket
	case strings.HasPrefix(ref, "sm://"):
		return Document
	}
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		return Directory
	}
	return Document
}

// Open returns the loader for ref (any BROKER_CONFIG form), for
// policy.NewLoaderWatcher, and what to close when done with it: a watched
// directory holds an inotify instance (a few per user, 128 by default), so
// every broker and check-policy run gives its own back. For fragment
// sources the loader is a *FragmentLoader's Load.
func Open(ref string, o Options) (policy.Loader, io.Closer, error) {
	switch KindOf(ref) {
	case Bucket:
		bucket, prefix, err := ParseGS(ref)
		if err != nil {
			return nil, nil, err
		}
		if o.Storage == nil {
			return nil, nil, errors.New("BROKER_CONFIG: gs:// needs a Cloud Storage client")
		}
		return NewFragmentLoader(&GCS{Client: o.Storage, Bucket: bucket, Prefix: prefix}).Load, noClose{}, nil
	case Directory:
		d := openDir(ref, o.Log)
		var c io.Closer = noClose{}
		if dc, ok := d.(io.Closer); ok {
			c = dc
		}
		return NewFragmentLoader(d).Load, c, nil
	}
	if o.Fetch == nil {
		return nil, nil, errors.New("BROKER_CONFIG: no document reader")
	}
	return func(ctx context.Context) (*policy.Policy, error) {
		data, err := o.Fetch(ctx, ref)
		if err != nil {
			return nil, errors.Join(errors.New("policy: cannot read document"), err)
		}
		return policy.Parse(data)
	}, noClose{}, nil
}

// noClose is the closer of sources that hold nothing open.
type noClose struct{}

func (noClose) Close() error { return nil }

// NewStorageClient creates the Cloud Storage client for gs:// sources:
// Application Default Credentials (the broker's service account on Cloud
// Run), or, when endpoint is set (BROKER_STORAGE_ENDPOINT, tests and the
// demo only), the JSON API at that http(s)://host:port without
// authentication. The client's own STORAGE_EMULATOR_HOST works too.
func NewStorageClient(ctx context.Context, endpoint string) (*storage.Client, error) {
	if endpoint == "" {
		return storage.NewClient(ctx, option.WithScopes(storage.ScopeReadOnly))
	}
	return storage.NewClient(ctx, option.WithEndpoint(strings.TrimSuffix(endpoint, "/")+"/storage/v1/"), option.WithoutAuthentication())
}
