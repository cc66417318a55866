package fakegcp

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Storage is Cloud Storage: fake-gcs-server's fakestorage, a real GCS JSON
// (and XML read) API server, on loopback. Google's storage client reaches it
// with option.WithEndpoint(URL()+"/storage/v1/") (what the broker's
// BROKER_STORAGE_ENDPOINT does) or STORAGE_EMULATOR_HOST. Buckets are
// versioned, so object generations and rollbacks behave as on GCS.
type Storage struct {
	srv  *fakestorage.Server
	http *http.Server
}

// serialized serves one request at a time: fake-gcs-server's memory
// backend races when two reads ask for an object at a generation
// (GetObjectWithGeneration appends to a slice it shares, under a read
// lock), which the broker does, 32 at a time, when it loads a prefix.
type serialized struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *serialized) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.ServeHTTP(w, r)
}

// NewStorage returns a Storage that is not listening yet.
func NewStorage() *Storage { return &Storage{} }

// Start listens on addr ("" or host:0 for an ephemeral port on 127.0.0.1).
func (s *Storage) Start(addr string) error {
	host, port := "127.0.0.1", uint16(0)
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return fmt.Errorf("port %q: %w", p, err)
		}
		host, port = h, uint16(n)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	// PublicHost = the listen host: XML API reads (the client's default
	// for downloads) are then served at the same address.
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: host, Port: port, PublicHost: host,
		Writer: io.Discard, NoListener: true, ExternalURL: "http://" + l.Addr().String()})
	if err != nil {
		l.Close()
		return err
	}
	s.srv = srv
	s.http = &http.Server{Handler: &serialized{h: srv.HTTPHandler()}, ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(l)
	return nil
}

// URL is http://127.0.0.1:P, the endpoint for BROKER_STORAGE_ENDPOINT.
func (s *Storage) URL() string {
	if s.srv == nil {
		return ""
	}
	return s.srv.URL()
}

// CreateBucket creates a versioned bucket.
func (s *Storage) CreateBucket(name string) {
	s.srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: true})
}

// Put writes an object (a new generation when it exists).
func (s *Storage) Put(bucket, name string, data []byte) {
	s.srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name, ContentType: "application/json"}, Content: data})
}

// Delete removes an object.
func (s *Storage) Delete(bucket, name string) error {
	return s.srv.Backend().DeleteObject(bucket, name)
}

// List returns the names of the live objects under prefix.
func (s *Storage) List(bucket, prefix string) ([]string, error) {
	objs, _, err := s.srv.ListObjects(bucket, prefix, "", false)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(objs))
	for i, o := range objs {
		names[i] = o.Name
	}
	return names, nil
}

// Close stops the server.
func (s *Storage) Close() {
	if s.http != nil {
		s.http.Close()
	}
	if s.srv != nil {
		s.srv.Stop()
	}
}

// Generation returns the live generation of an object.
func (s *Storage) Generation(bucket, name string) (int64, error) {
	o, err := s.srv.GetObject(bucket, name)
	if err != nil {
		return 0, err
	}
	return o.Generation, nil
}
