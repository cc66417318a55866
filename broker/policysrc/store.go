package policysrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// Object is one fragment as listed: its name (a path, or gs://BUCKET/OBJECT),
// what identifies its content, and its size.
type Object struct {
	Name    string
	Version Version
	Size    int64
}

// Version identifies a fragment's content without reading it: an object's
// generation, or a file's size and modification time. Equal versions are
// taken to mean equal content.
type Version struct {
	Generation int64
	Size       int64
	ModTime    int64 // Unix nanoseconds
}

// Store lists and reads the fragments of one source.
type Store interface {
	// List returns every fragment, in any order.
	List(ctx context.Context) ([]Object, error)
	// Read returns a listed fragment's content (at most
	// policy.MaxDocumentSize bytes, else an error).
	Read(ctx context.Context, o Object) ([]byte, error)
	// String names the source for messages.
	String() string
}

// Dir is a directory of fragments: every regular file (or symbolic link
// to one, as in a Kubernetes ConfigMap mount) directly in it whose name
// ends in ".json". Subdirectories and other names are ignored.
type Dir string

func (d Dir) String() string { return string(d) }

// List stats every *.json entry: its size and modification time are its
// version. On Linux the stats are made relative to the open directory
// (list_linux.go), which halves the cost of a large directory.
func (d Dir) List(context.Context) ([]Object, error) { return listDir(string(d)) }

// listDirPortable is listDir on other systems.
func listDirPortable(dir string) ([]Object, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: cannot list directory %s: %s", dir, pathReason(err))
	}
	out := make([]Object, 0, len(entries))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path) // follows a symbolic link
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the directory was read, or a dangling link
			}
			return nil, fmt.Errorf("policy: cannot stat fragment %s: %s", path, pathReason(err))
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, Object{Name: path, Size: fi.Size(), Version: Version{Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}})
	}
	return out, nil
}

// Read reads one file, refusing one larger than a fragment may be.
func (d Dir) Read(_ context.Context, o Object) ([]byte, error) { return readFile(o.Name, o.Size) }

// ReadEach reads the listed files as Read does, in order, opening the
// directory once and (on Linux) each file relative to it.
func (d Dir) ReadEach(_ context.Context, objs []Object, each func(i int, data []byte, err error)) {
	readFiles(string(d), objs, each)
}

// readFilePortable is readFile on other systems.
func readFilePortable(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.New(pathReason(err))
	}
	defer f.Close()
	return readLimited(f)
}

func pathReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return logtext.Truncate(err.Error(), 200)
}

func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, policy.MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %s", firstLine(err))
	}
	if len(data) > policy.MaxDocumentSize {
		return nil, fmt.Errorf("fragment is larger than %d bytes", policy.MaxDocumentSize)
	}
	return data, nil
}

// GCS is a Cloud Storage prefix: every object under Prefix (at any depth)
// whose name ends in ".json".
type GCS struct {
	Client func(ctx context.Context) (*storage.Client, error)
	Bucket string
	Prefix string // "" or ending in "/"
	// PageSize asks for that many objects per listing page (0: the
	// client's default). The JSON API returns at most 1,000 per page
	// whatever is asked, so it only matters against other servers.
	PageSize int
}

func (g *GCS) String() string { return "gs://" + g.Bucket + "/" + g.Prefix }

// List lists the prefix, asking only for names, generations and sizes.
func (g *GCS) List(ctx context.Context) ([]Object, error) {
	c, err := g.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: cannot list %s: %s", g, firstLine(err))
	}
	q := &storage.Query{Prefix: g.Prefix}
	if err := q.SetAttrSelection([]string{"Name", "Generation", "Size"}); err != nil {
		return nil, err
	}
	it := c.Bucket(g.Bucket).Objects(ctx, q)
	if g.PageSize > 0 {
		it.PageInfo().MaxSize = g.PageSize
	}
	var out []Object
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("policy: cannot list %s: %s", g, gcsReason(err))
		}
		if !strings.HasSuffix(a.Name, ".json") {
			continue
		}
		out = append(out, Object{Name: "gs://" + g.Bucket + "/" + a.Name, Size: a.Size, Version: Version{Generation: a.Generation}})
	}
}

// Read reads the listed generation of the object, so what is parsed is
// what was listed even if the object is replaced meanwhile.
func (g *GCS) Read(ctx context.Context, o Object) ([]byte, error) {
	if o.Size > policy.MaxDocumentSize {
		return nil, fmt.Errorf("fragment is %d bytes, limit %d", o.Size, policy.MaxDocumentSize)
	}
	c, err := g.Client(ctx)
	if err != nil {
		return nil, errors.New(firstLine(err))
	}
	name := strings.TrimPrefix(o.Name, "gs://"+g.Bucket+"/")
	r, err := c.Bucket(g.Bucket).Object(name).Generation(o.Version.Generation).NewReader(ctx)
	if err != nil {
		return nil, errors.New(gcsReason(err))
	}
	defer r.Close()
	return readLimited(r)
}

// gcsReason keeps the HTTP status and drops the server's free text.
func gcsReason(err error) string {
	var ge *googleapi.Error
	switch {
	case errors.Is(err, storage.ErrObjectNotExist):
		return "not found (deleted since it was listed?)"
	case errors.Is(err, storage.ErrBucketNotExist):
		return "bucket not found"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timed out"
	case errors.As(err, &ge):
		switch ge.Code {
		case 403:
			return "permission denied (grant roles/storage.objectViewer to the broker on the bucket)"
		case 401:
			return "the broker's own credentials were refused"
		}
		return fmt.Sprintf("Cloud Storage error (HTTP %d)", ge.Code)
	}
	return firstLine(err)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return logtext.Truncate(s, 200)
}
