package fakegcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// seenRequest is what the stand-in Orthanc received.
type seenRequest struct {
	method, path, query, auth, ctype string
	user, pass                       string
	basicOK                          bool
	body                             []byte
	chunked                          bool
}

type fakeOrthanc struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newFakeOrthanc(t *testing.T) *fakeOrthanc {
	o := &fakeOrthanc{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u, p, ok := r.BasicAuth()
		o.mu.Lock()
		o.seen = append(o.seen, seenRequest{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery,
			auth: r.Header.Get("Authorization"), ctype: r.Header.Get("Content-Type"), user: u, pass: p, basicOK: ok,
			body: b, chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"})
		o.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/studies") && r.Method == http.MethodPost {
			w.Header().Set("Content-Type", "application/dicom+json")
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(w, `{"stored":%d}`, len(b))
			return
		}
		if strings.Contains(r.URL.Path, "/missing") {
			http.Error(w, "no such study", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/dicom+json")
		w.Header().Set("X-Upstream", "orthanc")
		fmt.Fprint(w, `[{"0020000D":{"vr":"UI","Value":["1.2.3"]}}]`)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *fakeOrthanc) last() seenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[len(o.seen)-1]
}

func (o *fakeOrthanc) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}

func TestDICOMwebFront(t *testing.T) {
	tokens := startTokens(t)
	clock := newClock()
	tokens.SetNow(clock.Now)
	orthancX := newFakeOrthanc(t)
	orthancY := newFakeOrthanc(t)
	front := NewDICOMwebFront(tokens)
	const storeX = "projects/p/locations/europe-west2/datasets/d/dicomStores/x"
	const storeY = "projects/p/locations/europe-west2/datasets/d/dicomStores/y"
	const saX = "x@p.iam.gserviceaccount.com"
	const saY = "y@p.iam.gserviceaccount.com"
	front.AddStore(storeX, orthancX.URL+"/dicom-web/", "orthanc", "s3cret", saX)
	front.AddStore(storeY, orthancY.URL+"/dicom-web", "orthanc", "other")
	front.Bind(storeY, saY)
	if err := front.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })

	tokX, _ := tokens.Issue(saX, []string{ScopeCloudHealthcare}, 10*time.Minute)
	tokY, _ := tokens.Issue(saY, []string{ScopeCloudPlatform}, time.Hour)
	tokNarrow, _ := tokens.Issue(saX, []string{ScopeUserinfoEmail}, time.Hour)
	tokExpiring, _ := tokens.Issue(saX, []string{ScopeCloudHealthcare}, time.Minute)
	clock.Advance(2 * time.Minute) // tokExpiring is now expired

	base := front.URL() + "/v1/"
	tests := []struct {
		desc     string
		store    string
		rest     string
		token    string
		status   int
		upstream *fakeOrthanc
	}{
		{"accepted", storeX, "studies?PatientID=42&limit=5", tokX, 200, orthancX},
		{"platform scope accepted", storeY, "studies", tokY, 200, orthancY},
		{"wrong store", storeY, "studies", tokX, 403, nil},
		{"unknown store", "projects/p/locations/l/datasets/d/dicomStores/nope", "studies", tokX, 403, nil},
		{"expired", storeX, "studies", tokExpiring, 401, nil},
		{"missing", storeX, "studies", "", 401, nil},
		{"unknown token", storeX, "studies", "ya29.nope", 401, nil},
		{"narrow scope", storeX, "studies", tokNarrow, 403, nil},
		{"upstream status passes through", storeX, "studies/missing", tokX, 404, orthancX},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			nX, nY := orthancX.count(), orthancY.count()
			req, _ := http.NewRequest("GET", base+tc.store+"/dicomWeb/"+tc.rest, nil)
			req.Header.Set("Accept", "application/dicom+json")
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.upstream == nil {
				if orthancX.count() != nX || orthancY.count() != nY {
					t.Error("refused request reached an upstream")
				}
				var e googleAPIError
				if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != tc.status || e.Error.Status == "" {
					t.Errorf("error body %s", b)
				}
				if tc.token != "" && strings.Contains(string(b), tc.token) {
					t.Error("error body echoes the token")
				}
				if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				return
			}
			got := tc.upstream.last()
			wantPath := "/dicom-web/" + strings.SplitN(tc.rest, "?", 2)[0]
			if got.path != wantPath {
				t.Errorf("upstream path %q, want %q", got.path, wantPath)
			}
			if _, q, ok := strings.Cut(tc.rest, "?"); ok && got.query != q {
				t.Errorf("upstream query %q, want %q", got.query, q)
			}
			if !got.basicOK || got.user != "orthanc" || strings.HasPrefix(got.auth, "Bearer") {
				t.Errorf("upstream auth: basic %v user %q header %q", got.basicOK, got.user, got.auth)
			}
			if tc.upstream == orthancX && got.pass != "s3cret" {
				t.Errorf("upstream password %q", got.pass)
			}
			if resp.StatusCode == 200 && (resp.Header.Get("X-Upstream") != "orthanc" || !strings.Contains(string(b), "1.2.3")) {
				t.Errorf("proxied answer lost headers/body: %v %s", resp.Header, b)
			}
		})
	}
	if a, r := front.Counts(storeX); a != 2 || r != 4 {
		t.Errorf("Counts(X) = %d/%d, want 2/4", a, r)
	}
	if a, r := front.Counts(storeY); a != 1 || r != 1 {
		t.Errorf("Counts(Y) = %d/%d, want 1/1", a, r)
	}
	if _, r := front.Counts("projects/p/locations/l/datasets/d/dicomStores/nope"); r != 1 {
		t.Errorf("refusals at unknown store = %d", r)
	}
}

func TestDICOMwebChunkedUpload(t *testing.T) {
	tokens := startTokens(t)
	orthanc := newFakeOrthanc(t)
	front := NewDICOMwebFront(tokens)
	const store = "projects/p/locations/l/datasets/d/dicomStores/s"
	front.AddStore(store, orthanc.URL+"/dicom-web/", "u", "p", "sa@p.iam.gserviceaccount.com")
	if err := front.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	tok, _ := tokens.Issue("sa@p.iam.gserviceaccount.com", []string{ScopeCloudHealthcare}, time.Hour)

	// A body of unknown length goes out chunked, as Orthanc's STOW client sends it.
	payload := bytes.Repeat([]byte("DICM-part-"), 50000)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(payload); off += 64 << 10 {
			pw.Write(payload[off:min(off+64<<10, len(payload))])
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", front.URL()+"/v1/"+store+"/dicomWeb/studies", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=xyz`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != fmt.Sprintf(`{"stored":%d}`, len(payload)) {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	got := orthanc.last()
	if !bytes.Equal(got.body, payload) || !strings.HasPrefix(got.ctype, "multipart/related") || got.method != "POST" {
		t.Errorf("upstream got %d bytes, ctype %q", len(got.body), got.ctype)
	}
	if !got.chunked {
		t.Error("upload was not streamed chunked to the upstream")
	}
}

func TestSplitDICOMwebPath(t *testing.T) {
	tests := []struct {
		in, store, rest string
		ok              bool
	}{
		{"/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies/1.2/series", "projects/p/locations/l/datasets/d/dicomStores/s", "studies/1.2/series", true},
		{"/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb", "projects/p/locations/l/datasets/d/dicomStores/s", "", true},
		{"/v1/projects/p/locations/l/datasets/d/dicomStores/s/fhir/x", "", "", false},
		{"/v1beta1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/x", "", "", false},
		{"/v1/projects//locations/l/datasets/d/dicomStores/s/dicomWeb/x", "", "", false},
	}
	for _, tc := range tests {
		s, r, ok := splitDICOMwebPath(tc.in)
		if s != tc.store || r != tc.rest || ok != tc.ok {
			t.Errorf("%s: %q %q %v", tc.in, s, r, ok)
		}
	}
}
