package stack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// IssuedToken is one token the broker handed to the agent, as the tap saw
// it: sealed to the request's key, which only the agent holds. Its
// plaintext is found through the broker's audit line (Stack.HandedOut).
type IssuedToken struct {
	Store     string
	Sealed    string
	ExpiresAt time.Time
	SeenAt    time.Time
	// Plaintext is true when the answer carried an access_token field: a
	// broker that does not seal. The agent refuses such an answer.
	Plaintext bool
}

// BrokerTap is a recording reverse proxy between the agent and the broker:
// the agent's Broker.Url points at it. It counts requests and keeps every
// token item the broker answered with. It lives in the test process, so it
// keeps listening while the broker is killed; then it drops the agent's
// connection without an answer, which the agent sees as an unreachable
// broker, as it would without a tap.
type BrokerTap struct {
	srv   *http.Server
	url   string
	proxy *httputil.ReverseProxy
	now   func() time.Time

	mu       sync.Mutex
	requests map[string]int // by "METHOD /path"
	tokens   []IssuedToken
	// log receives one line per request (nil: none), see eventLog.
	log *eventLog
}

func startBrokerTap(target string, now func() time.Time) (*BrokerTap, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &BrokerTap{url: "http://" + ln.Addr().String(), now: now, requests: map[string]int{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DisableKeepAlives = true // the broker is restarted under the tap
	t.proxy = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // keep the Host the agent addressed
		},
		ModifyResponse: t.record,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The broker is down: behave like it (connection closed, no answer).
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	t.srv = &http.Server{Handler: t, ReadHeaderTimeout: 10 * time.Second}
	go t.srv.Serve(ln)
	return t, nil
}

// URL is the tap's address, the agent's Broker.Url.
func (t *BrokerTap) URL() string { return t.url }

// ServeHTTP counts the request and forwards it to the broker.
func (t *BrokerTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	t.requests[r.Method+" "+r.URL.Path]++
	t.mu.Unlock()
	start := t.now()
	sw := &statusWriter{ResponseWriter: w}
	t.proxy.ServeHTTP(sw, r)
	// Status 0: the broker was down and the agent's connection was dropped.
	t.log.write(map[string]any{"time": start, "ms": t.now().Sub(start).Milliseconds(),
		"method": r.Method, "path": r.URL.Path, "status": sw.code})
}

// record keeps the tokens of a successful POST /v1/tokens answer.
func (t *BrokerTap) record(resp *http.Response) error {
	if resp.Request.URL.Path != wire.PathTokens || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var doc struct {
		Tokens []struct {
			wire.Token
			Plaintext json.RawMessage `json:"access_token"`
		} `json:"tokens"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return nil // not ours to judge; the agent will complain
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tk := range doc.Tokens {
		exp, _ := time.Parse(time.RFC3339, tk.ExpiresAt) // zero if malformed: the agent refuses it
		t.tokens = append(t.tokens, IssuedToken{Store: tk.Store, Sealed: tk.SealedAccessToken, ExpiresAt: exp, SeenAt: now,
			Plaintext: tk.Plaintext != nil})
	}
	return nil
}

// Requests returns how many requests the agent sent, by "METHOD /path".
func (t *BrokerTap) Requests() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.requests))
	for k, v := range t.requests {
		out[k] = v
	}
	return out
}

// TotalRequests is the sum of Requests.
func (t *BrokerTap) TotalRequests() int {
	n := 0
	for _, v := range t.Requests() {
		n += v
	}
	return n
}

// Issued lists every token item handed out, in order (a token served
// twice from the broker's cache appears twice, sealed differently).
func (t *BrokerTap) Issued() []IssuedToken {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]IssuedToken(nil), t.tokens...)
}

func (t *BrokerTap) close() { _ = t.srv.Close() }

// FrontRecorder sits in front of the fake Healthcare DICOMweb endpoint and
// counts, per store path, the requests and the answers' status codes, and
// the fingerprints (never the values) of the bearer tokens presented.
type FrontRecorder struct {
	srv  *http.Server
	url  string
	next http.Handler

	mu      sync.Mutex
	status  map[string]map[int]int
	bearers map[string]map[string]bool // store -> fingerprint set
	events  []FrontEvent
	// log receives one line per request (nil: none).
	log *eventLog
}

// FrontEvent is one request the front answered: what Orthanc sent to the
// fake Healthcare API and what it got back.
type FrontEvent struct {
	Start, End time.Time
	Method     string
	// Store is the store path; Path is the rest (dicomWeb/studies...).
	Store, Path string
	Status      int
	// Fingerprint is the bearer token's audit fingerprint ("" without one).
	Fingerprint string
}

// maxFrontEvents bounds the events kept (a 10-minute soak makes ~5000).
const maxFrontEvents = 200000

func startFrontRecorder(next http.Handler) (*FrontRecorder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &FrontRecorder{url: "http://" + ln.Addr().String(), next: next,
		status: map[string]map[int]int{}, bearers: map[string]map[string]bool{}}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	go f.srv.Serve(ln)
	return f, nil
}

// URL is "http://127.0.0.1:PORT"; the policy's BaseUrl is URL()+"/v1/".
func (f *FrontRecorder) URL() string { return f.url }

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Hijack lets the tap drop the agent's connection when the broker is down
// (its ErrorHandler), as it does without the wrapper.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("stack: this response cannot be hijacked")
	}
	return hj.Hijack()
}

func (s *statusWriter) Flush() {
	if fl, ok := s.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// ServeHTTP records and forwards to the fake front.
func (f *FrontRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ev := FrontEvent{Start: time.Now(), Method: r.Method, Store: storeOfPath(r.URL.EscapedPath())}
	ev.Path = strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), "/v1/"+ev.Store), "/")
	store := ev.Store
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		ev.Fingerprint = wire.Fingerprint(tok)
		f.mu.Lock()
		if f.bearers[store] == nil {
			f.bearers[store] = map[string]bool{}
		}
		f.bearers[store][ev.Fingerprint] = true
		f.mu.Unlock()
	}
	sw := &statusWriter{ResponseWriter: w}
	f.next.ServeHTTP(sw, r)
	ev.End, ev.Status = time.Now(), sw.code
	f.mu.Lock()
	if f.status[store] == nil {
		f.status[store] = map[int]int{}
	}
	f.status[store][sw.code]++
	if len(f.events) < maxFrontEvents {
		f.events = append(f.events, ev)
	}
	log := f.log
	f.mu.Unlock()
	log.write(map[string]any{"time": ev.Start, "ms": ev.End.Sub(ev.Start).Milliseconds(), "method": ev.Method,
		"store": ev.Store, "path": ev.Path, "status": ev.Status, wire.FingerprintKey: ev.Fingerprint})
}

// Events returns the requests for storePath ("" for every store) whose
// handling overlapped [from, to], in arrival order.
func (f *FrontRecorder) Events(storePath string, from, to time.Time) []FrontEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FrontEvent
	for _, ev := range f.events {
		if (storePath == "" || ev.Store == storePath) && !ev.End.Before(from) && !ev.Start.After(to) {
			out = append(out, ev)
		}
	}
	return out
}

// Statuses returns the count of answers by status code for a store path
// ("projects/P/locations/L/datasets/D/dicomStores/S").
func (f *FrontRecorder) Statuses(storePath string) map[int]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]int{}
	for k, v := range f.status[storePath] {
		out[k] = v
	}
	return out
}

// BearerFingerprints returns the audit fingerprints of the distinct bearer
// tokens presented at storePath.
func (f *FrontRecorder) BearerFingerprints(storePath string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.bearers[storePath]))
}

func (f *FrontRecorder) close() { _ = f.srv.Close() }

// storeOfPath extracts "projects/P/locations/L/datasets/D/dicomStores/S"
// from "/v1/projects/.../dicomStores/S/dicomWeb/...", or returns "".
func storeOfPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/v1/")
	if !ok {
		return ""
	}
	seg := strings.SplitN(rest, "/", 9)
	if len(seg) < 8 {
		return ""
	}
	return strings.Join(seg[:8], "/")
}

// eventLog writes one JSON object a line to a file, safe for concurrent
// use; a nil *eventLog writes nothing. It never receives a token value:
// callers log fingerprints only.
type eventLog struct {
	mu sync.Mutex
	f  *os.File
}

func openEventLog(path string) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &eventLog{f: f}, nil
}

func (l *eventLog) write(fields map[string]any) {
	if l == nil {
		return
	}
	line, err := json.Marshal(fields)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.Write(append(line, '\n'))
}

func (l *eventLog) close() {
	if l != nil {
		_ = l.f.Close()
	}
}
