package fakegcp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
)

// Admin is the control API tests and the demo use on a running fake cloud (documented
// in testbed/cmd/fakegcp). Every request and answer body is JSON; errors are
// {"error":{"code":"bad_request","message":"..."}}. Answers never carry tokens or keys.
type Admin struct {
	hs     httpServer
	cloud  *Cloud
	outDir string

	mu    sync.Mutex
	state *State
}

// NewAdmin returns the admin API for c; state is what GET /state answers (it is kept
// up to date by the admin calls that provision things). Files written by
// POST /keys/rotate go to outDir when relative.
func NewAdmin(c *Cloud, state *State, outDir string) *Admin {
	if state == nil {
		state = c.State()
	}
	return &Admin{cloud: c, state: state, outDir: outDir}
}

// Start listens on addr (like "127.0.0.1:0") and serves until Close.
func (a *Admin) Start(addr string) error { return a.hs.start(addr, a.Handler()) }

// URL is "http://127.0.0.1:PORT".
func (a *Admin) URL() string { return a.hs.url() }

// Close stops serving.
func (a *Admin) Close() error { return a.hs.close() }

// State returns a copy of the current state document.
func (a *Admin) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := *a.state
	st.AdminURL = a.URL()
	st.Stores = a.cloud.DICOMweb.Stores()
	return st
}

// Counters is GET /counters.
type Counters struct {
	TokenRequests         int
	TokenInjectedFailures int // answers failed by FailNext (POST /token/fail-next)
	TokenSlowedAnswers    int // answers delayed by SlowNext (POST /token/slow-next)
	Minted                map[string]int
	MintedByKey           map[string]int
	SecretAccesses        map[string]int
	IamCalls              map[string]int
	MetadataTokenRequests int
	DicomWeb              map[string]StoreCounts
}

// Counters snapshots every fake's counters.
func (a *Admin) Counters() Counters {
	c := a.cloud
	return Counters{
		TokenRequests:         c.Tokens.Requests(),
		TokenInjectedFailures: c.Tokens.InjectedFailures(),
		TokenSlowedAnswers:    c.Tokens.SlowedAnswers(),
		Minted:                c.Tokens.MintedCounts(),
		MintedByKey:           c.Tokens.MintedByKeyCounts(),
		SecretAccesses:        c.SecretManager.AccessCounts(),
		IamCalls:              c.IAM.CallCounts(),
		MetadataTokenRequests: c.Metadata.TokenRequests(),
		DicomWeb:              c.DICOMweb.AllCounts(),
	}
}

type adminError struct {
	status int
	msg    string
}

func (e *adminError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &adminError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// handle wraps an admin call: decode the body strictly into In, answer the result.
func handle[In any](f func(in In) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil && len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			err = dec.Decode(&in)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "bad_request", "message": "bad JSON body: " + err.Error()}})
			return
		}
		out, err := f(in)
		if err != nil {
			st, code := http.StatusInternalServerError, "internal"
			var ae *adminError
			if errors.As(err, &ae) {
				st, code = ae.status, "bad_request"
			}
			writeJSON(w, st, map[string]any{"error": map[string]string{"code": code, "message": err.Error()}})
			return
		}
		if out == nil {
			out = struct{}{}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

type none struct{}

// Handler returns the admin API's routes.
func (a *Admin) Handler() http.Handler {
	c := a.cloud
	mux := http.NewServeMux()
	mux.Handle("GET /state", handle(func(none) (any, error) { return a.State(), nil }))
	mux.Handle("GET /counters", handle(func(none) (any, error) { return a.Counters(), nil }))

	mux.Handle("POST /keys/disable", handle(func(in struct{ KeyId string }) (any, error) {
		if in.KeyId == "" {
			return nil, badRequest("KeyId is required")
		}
		c.Tokens.DisableKey(in.KeyId)
		return nil, nil
	}))
	mux.Handle("POST /keys/enable", handle(func(in struct{ KeyId string }) (any, error) {
		if in.KeyId == "" {
			return nil, badRequest("KeyId is required")
		}
		c.Tokens.EnableKey(in.KeyId)
		return nil, nil
	}))
	mux.Handle("POST /keys/rotate", handle(func(in struct {
		Email, Secret, File string
		DisableOld          bool
	}) (any, error) {
		if in.Email == "" || (in.Secret == "" && in.File == "") {
			return nil, badRequest("Email and Secret and/or File are required")
		}
		if in.Secret != "" {
			if _, _, ok := parseSecretName(in.Secret); !ok {
				return nil, badRequest("Secret %q is not projects/P/secrets/S", in.Secret)
			}
		}
		old := c.Tokens.KeyIDs(in.Email)
		cred, keyID, err := c.Tokens.NewServiceAccountKey(in.Email)
		if err != nil {
			return nil, err
		}
		file, version, err := c.deliver(cred, in.Secret, in.File, a.outDir)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		if in.DisableOld {
			for _, id := range old {
				c.Tokens.DisableKey(id)
			}
		}
		sa := StateServiceAccount{Email: in.Email, KeyID: keyID, Secret: in.Secret, SecretVersion: version, File: file}
		a.mu.Lock()
		a.state.ServiceAccounts = append(a.state.ServiceAccounts, sa)
		a.mu.Unlock()
		return sa, nil
	}))
	mux.Handle("POST /users/revoke", handle(func(in struct{ Principal string }) (any, error) {
		if in.Principal == "" {
			return nil, badRequest("Principal is required")
		}
		c.Tokens.RevokeAuthorizedUser(in.Principal)
		return nil, nil
	}))
	mux.Handle("POST /token/fail-next", handle(func(in struct{ Count, Status int }) (any, error) {
		c.Tokens.FailNext(in.Count, in.Status)
		return nil, nil
	}))
	mux.Handle("POST /token/slow-next", handle(func(in struct {
		Count int
		Delay string
	}) (any, error) {
		d, err := time.ParseDuration(in.Delay)
		if in.Count == 0 {
			d, err = 0, nil // a reset needs no delay
		}
		if err != nil || d < 0 {
			return nil, badRequest("Delay %q: want a Go duration", in.Delay)
		}
		c.Tokens.SlowNext(in.Count, d)
		return nil, nil
	}))
	mux.Handle("POST /token/latency", handle(func(in struct{ Latency string }) (any, error) {
		d, err := time.ParseDuration(in.Latency)
		if err != nil || d < 0 {
			return nil, badRequest("Latency %q: want a Go duration", in.Latency)
		}
		c.Tokens.SetLatency(d)
		return nil, nil
	}))
	mux.Handle("POST /token/lifetime", handle(func(in struct{ Lifetime string }) (any, error) {
		d, err := time.ParseDuration(in.Lifetime)
		if err != nil || d < time.Second {
			return nil, badRequest("Lifetime %q: want a Go duration of at least 1s", in.Lifetime)
		}
		c.Tokens.SetLifetime(d)
		return nil, nil
	}))
	mux.Handle("POST /clock/advance", handle(func(in struct{ By string }) (any, error) {
		d, err := time.ParseDuration(in.By)
		if err != nil {
			return nil, badRequest("By %q: want a Go duration", in.By)
		}
		return map[string]string{"Offset": c.AdvanceClock(d).String()}, nil
	}))
	mux.Handle("POST /iam/fail-next", handle(func(in struct{ Count, Status int }) (any, error) {
		c.IAM.FailNext(in.Count, in.Status)
		return nil, nil
	}))
	mux.Handle("POST /iam/allow", handle(func(in SetupBinding) (any, error) {
		if in.Caller == "" || in.Target == "" {
			return nil, badRequest("Caller and Target are required")
		}
		c.IAM.AllowCaller(in.Caller, in.Target)
		return nil, nil
	}))
	mux.Handle("POST /iam/revoke", handle(func(in SetupBinding) (any, error) {
		c.IAM.RevokeCaller(in.Caller, in.Target)
		return nil, nil
	}))
	mux.Handle("POST /secretmanager/down", handle(func(in struct{ Down bool }) (any, error) {
		c.SecretManager.SetDown(in.Down)
		return nil, nil
	}))
	mux.Handle("POST /secretmanager/deny", handle(func(in struct {
		Secret string
		Deny   bool
	}) (any, error) {
		c.SecretManager.Deny(in.Secret, in.Deny)
		return nil, nil
	}))
	mux.Handle("POST /secretmanager/versions", handle(func(in struct {
		Secret, Data, DataBase64 string
	}) (any, error) {
		if _, _, ok := parseSecretName(in.Secret); !ok {
			return nil, badRequest("Secret %q is not projects/P/secrets/S", in.Secret)
		}
		data := []byte(in.Data)
		if in.DataBase64 != "" {
			var err error
			if data, err = base64.StdEncoding.DecodeString(in.DataBase64); err != nil {
				return nil, badRequest("DataBase64: %v", err)
			}
		}
		return map[string]string{"Version": c.SecretManager.AddVersion(in.Secret, data)}, nil
	}))
	mux.Handle("POST /secretmanager/version-state", handle(func(in struct{ Version, State string }) (any, error) {
		st, ok := secretmanagerpb.SecretVersion_State_value[in.State]
		if !ok || st == 0 {
			return nil, badRequest("State %q: want ENABLED, DISABLED or DESTROYED", in.State)
		}
		if err := c.SecretManager.SetVersionState(in.Version, secretmanagerpb.SecretVersion_State(st)); err != nil {
			return nil, badRequest("%v", err)
		}
		return nil, nil
	}))
	mux.Handle("POST /stores", handle(func(in SetupStore) (any, error) {
		if err := addStore(c.DICOMweb, in); err != nil {
			return nil, badRequest("%v", err)
		}
		return nil, nil
	}))
	mux.Handle("POST /stores/bind", handle(func(in struct{ Path, Principal string }) (any, error) {
		if !ValidStorePath(in.Path) || in.Principal == "" {
			return nil, badRequest("a valid Path and a Principal are required")
		}
		c.DICOMweb.Bind(in.Path, in.Principal)
		return nil, nil
	}))
	mux.Handle("POST /stores/unbind", handle(func(in struct{ Path, Principal string }) (any, error) {
		c.DICOMweb.Unbind(in.Path, in.Principal)
		return nil, nil
	}))
	return mux
}
