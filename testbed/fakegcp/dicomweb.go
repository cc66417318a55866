package fakegcp

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
)

type dicomStore struct {
	upstream   *url.URL
	user, pass string
	principals map[string]bool
	accepted   int
	refused    int
}

// DICOMwebFront plays the Healthcare API's DICOMweb endpoint: requests to
// /v1/projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb/<rest> need a bearer token
// the TokenServer issued, unexpired, with scope cloud-healthcare or cloud-platform, whose
// principal is bound to that exact store. Accepted requests are reverse-proxied (streamed)
// to upstream+<rest> with Basic auth, the client's Authorization header removed.
type DICOMwebFront struct {
	hs     httpServer
	tokens *TokenServer

	mu     sync.Mutex
	stores map[string]*dicomStore
	counts map[string][2]int // refusals at paths that are not stores
	log    *slog.Logger
	proxy  *httputil.ReverseProxy
}

// NewDICOMwebFront returns a front with no stores.
func NewDICOMwebFront(tokens *TokenServer) *DICOMwebFront {
	f := &DICOMwebFront{tokens: tokens, stores: map[string]*dicomStore{}, counts: map[string][2]int{}, log: discardLogger()}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Orthanc closes idle keep-alive connections after ~1 s and Go does not retry a POST
	// that meets a closed connection, so use a fresh connection per request.
	tr.DisableKeepAlives = true
	f.proxy = &httputil.ReverseProxy{
		Transport:     tr,
		Rewrite:       func(*httputil.ProxyRequest) {}, // the request is rewritten in ServeHTTP
		FlushInterval: -1,                              // stream multipart answers as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			f.log.Info("fakegcp: dicomweb upstream error", "error", err.Error())
			writeGoogleError(w, http.StatusBadGateway, "upstream DICOM store unreachable")
		},
	}
	return f
}

// SetLogger sets where the front logs (never token values). Default: discard.
func (f *DICOMwebFront) SetLogger(l *slog.Logger) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = l
}

// AddStore serves storePath ("projects/P/locations/L/datasets/D/dicomStores/S") from
// upstream (e.g. "http://127.0.0.1:8043/dicom-web/") with Basic user/pass, and binds
// principals to it. Adding an existing store replaces its upstream and adds principals.
func (f *DICOMwebFront) AddStore(storePath, upstream, user, pass string, principals ...string) {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		panic(fmt.Sprintf("fakegcp: AddStore: bad upstream URL %q", upstream))
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	storePath = strings.Trim(storePath, "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stores[storePath]
	if !ok {
		st = &dicomStore{principals: map[string]bool{}}
		f.stores[storePath] = st
	}
	st.upstream, st.user, st.pass = u, user, pass
	for _, p := range principals {
		st.principals[p] = true
	}
}

// Bind allows principal's tokens at storePath (the store must exist).
func (f *DICOMwebFront) Bind(storePath, principal string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.stores[strings.Trim(storePath, "/")]; ok {
		st.principals[principal] = true
	}
}

// Unbind removes a binding made by AddStore or Bind.
func (f *DICOMwebFront) Unbind(storePath, principal string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.stores[strings.Trim(storePath, "/")]; ok {
		delete(st.principals, principal)
	}
}

// Stores lists the configured store paths, sorted.
func (f *DICOMwebFront) Stores() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.stores))
}

// Start listens on addr (like "127.0.0.1:0") and serves until Close.
func (f *DICOMwebFront) Start(addr string) error { return f.hs.start(addr, f) }

// URL is "http://127.0.0.1:PORT"; the Healthcare base URL is URL()+"/v1/".
func (f *DICOMwebFront) URL() string { return f.hs.url() }

// Close stops serving.
func (f *DICOMwebFront) Close() error { return f.hs.close() }

// Counts reports requests accepted and refused at storePath.
func (f *DICOMwebFront) Counts(storePath string) (accepted, refused int) {
	storePath = strings.Trim(storePath, "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.stores[storePath]; ok {
		return st.accepted, st.refused
	}
	c := f.counts[storePath]
	return c[0], c[1]
}

// StoreCounts is one store's Counts.
type StoreCounts struct {
	Accepted int
	Refused  int
}

// AllCounts snapshots Counts for every store path seen or configured.
func (f *DICOMwebFront) AllCounts() map[string]StoreCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]StoreCounts{}
	for p, c := range f.counts {
		out[p] = StoreCounts{Accepted: c[0], Refused: c[1]}
	}
	for p, st := range f.stores {
		out[p] = StoreCounts{Accepted: st.accepted, Refused: st.refused}
	}
	return out
}

// ValidStorePath reports whether p has the form projects/P/locations/L/datasets/D/dicomStores/S.
func ValidStorePath(p string) bool {
	s, rest, ok := splitDICOMwebPath("/v1/" + p + "/dicomWeb")
	return ok && s == p && rest == ""
}

// splitDICOMwebPath splits an escaped request path into the store path and the escaped
// rest after "/dicomWeb/".
func splitDICOMwebPath(escaped string) (store, rest string, ok bool) {
	p, ok := strings.CutPrefix(escaped, "/v1/")
	if !ok {
		return "", "", false
	}
	seg := strings.Split(p, "/")
	// projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb[/rest...]
	if len(seg) < 9 || seg[0] != "projects" || seg[2] != "locations" || seg[4] != "datasets" ||
		seg[6] != "dicomStores" || seg[8] != "dicomWeb" {
		return "", "", false
	}
	for _, s := range seg[:8] {
		if s == "" {
			return "", "", false
		}
	}
	return strings.Join(seg[:8], "/"), strings.Join(seg[9:], "/"), true
}

func (f *DICOMwebFront) refuse(w http.ResponseWriter, storePath string, st *dicomStore, code int, msg string) {
	f.mu.Lock()
	if st != nil {
		st.refused++
	} else {
		c := f.counts[storePath]
		c[1]++
		f.counts[storePath] = c
	}
	log := f.log
	f.mu.Unlock()
	log.Info("fakegcp: dicomweb request refused", "store", storePath, "status", code)
	writeGoogleError(w, code, msg)
}

// ServeHTTP checks the bearer token and proxies to the store's upstream.
func (f *DICOMwebFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	storePath, rest, ok := splitDICOMwebPath(r.URL.EscapedPath())
	if !ok {
		writeGoogleError(w, http.StatusNotFound, "Requested entity was not found.")
		return
	}
	f.mu.Lock()
	st := f.stores[storePath]
	f.mu.Unlock()

	tok, has := bearerToken(r)
	var ti TokenInfo
	if has {
		ti, has = f.tokens.Valid(tok)
	}
	if !has {
		f.refuse(w, storePath, st, http.StatusUnauthorized,
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
		return
	}
	if !ti.HasScope(ScopeCloudHealthcare, ScopeCloudPlatform) {
		f.refuse(w, storePath, st, http.StatusForbidden, "Request had insufficient authentication scopes.")
		return
	}
	f.mu.Lock()
	allowed := st != nil && st.principals[ti.Principal]
	var target url.URL
	var user, pass string
	if allowed {
		target, user, pass = *st.upstream, st.user, st.pass
	}
	f.mu.Unlock()
	if !allowed {
		// Google does not reveal whether a store the caller cannot use exists.
		f.refuse(w, storePath, st, http.StatusForbidden,
			fmt.Sprintf("Permission 'healthcare.dicomStores.dicomWebRead' denied on resource '%s' (or it may not exist).", storePath))
		return
	}

	out := r.Clone(r.Context())
	out.URL = joinUpstream(&target, rest, r.URL.RawQuery)
	out.Host = target.Host
	out.RequestURI = ""
	out.Header.Del("Authorization")
	out.SetBasicAuth(user, pass)
	f.mu.Lock()
	st.accepted++
	f.mu.Unlock()
	f.proxy.ServeHTTP(w, out)
}

// joinUpstream appends the escaped rest to the upstream base (which ends in "/").
func joinUpstream(base *url.URL, rest, rawQuery string) *url.URL {
	u := *base
	basePath := base.EscapedPath()
	escaped := basePath + strings.TrimPrefix(rest, "/")
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = p, escaped
		if u.EscapedPath() != escaped {
			u.RawPath = escaped
		}
	}
	u.RawQuery = rawQuery
	return &u
}
