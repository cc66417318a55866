package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// Orthanc user the agents log in as.
const orthancUser = "agent"

// serverOptions are the ServerOptions of docs/agent.md's example config.
var serverOptions = map[string]json.RawMessage{
	"HasDelete": json.RawMessage(`true`), "ChunkedTransfers": json.RawMessage(`true`), "Timeout": json.RawMessage(`600`),
}

// clock is wall time plus an offset that only grows. The in-process broker
// and the in-process agent share it, so a refresh can be made due (and the
// broker's cached token stale) without sleeping. The fake token endpoint
// keeps wall time: x/oauth2 signs the JWT-bearer assertion with time.Now,
// and the broker restates upstream expiries on its own clock.
type clock struct{ off atomic.Int64 }

// Now is the shifted time.
func (c *clock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// site is one Orthanc with the agent that manages it.
type site struct {
	agentID string
	stores  []string // store names granted to agentID, sorted
	orthanc *orthancproc.Instance
	keyPath string
	key     ed25519.PrivateKey
}

// env is everything the measurements share: the Google fakes, the broker
// (in process, on loopback), and one Orthanc site per store count.
type env struct {
	dir       string
	clk       *clock
	cloud     *fakegcp.Cloud
	keyID     string // the service-account key every account uses
	brokerURL string
	brk       *broker.Broker
	srv       *http.Server
	pwPath    string
	sites     map[int]*site // by number of stores
	agentEnv  []string      // extra KEY=VALUE for agent processes
	// allowedHosts is the agents' AllowedDicomWebHosts: the fake DICOMweb
	// front's loopback host:port (the default allows only
	// healthcare.googleapis.com).
	allowedHosts []string
}

// storeNames returns n account names for agentID.
func storeNames(agentID string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", agentID, i)
	}
	return out
}

// newEnv starts the fakes, one Orthanc per entry of counts and the broker
// with a policy granting agent "site-N" the N stores of its site.
func newEnv(ctx context.Context, dir string, counts []int) (e *env, err error) {
	e = &env{dir: dir, clk: &clock{}, sites: map[int]*site{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.cloud, err = fakegcp.StartCloud("broker@bench.iam.gserviceaccount.com", "bench"); err != nil {
		return nil, err
	}
	// One service-account key serves every account: the broker still keeps
	// one token per account, and 50 RSA key generations would only slow
	// the set-up down.
	keyJSON, keyID, err := e.cloud.Tokens.NewServiceAccountKey("store@bench.iam.gserviceaccount.com")
	if err != nil {
		return nil, err
	}
	e.keyID = keyID
	saPath := filepath.Join(dir, "sa.json")
	if err := os.WriteFile(saPath, keyJSON, 0o600); err != nil {
		return nil, err
	}
	e.pwPath = filepath.Join(dir, "orthanc.password")
	pw := randomPassword()
	if err := os.WriteFile(e.pwPath, []byte(pw+"\n"), 0o600); err != nil {
		return nil, err
	}

	accounts := map[string]any{}
	agents := map[string]any{}
	for _, n := range counts {
		s := &site{agentID: fmt.Sprintf("site-%d", n), stores: storeNames(fmt.Sprintf("s%d", n), n)}
		s.keyPath = filepath.Join(dir, s.agentID+".key")
		pub, err := agentkey.WriteNew(s.keyPath)
		if err != nil {
			return nil, err
		}
		if s.key, err = agentkey.ReadFile(s.keyPath); err != nil {
			return nil, err
		}
		for _, st := range s.stores {
			accounts[st] = map[string]any{"Project": "bench", "Location": "europe-west2", "Dataset": "d", "DicomStore": st, "ServiceAccountSecret": saPath}
		}
		sort.Strings(s.stores)
		agents[s.agentID] = map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": s.stores}
		s.orthanc, err = orthancproc.Start(orthancproc.Options{
			Name: fmt.Sprintf("site%d", n), Dir: filepath.Join(dir, fmt.Sprintf("orthanc-%d", n)),
			Users: map[string]string{orthancUser: pw},
		})
		if err != nil {
			return nil, err
		}
		e.sites[n] = s
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.brokerURL = "http://" + lis.Addr().String()
	front, err := url.Parse(e.cloud.DICOMweb.URL())
	if err != nil || front.Port() == "" {
		lis.Close()
		return nil, fmt.Errorf("bench/agent: the fake DICOMweb URL %q has no port", e.cloud.DICOMweb.URL())
	}
	e.allowedHosts = []string{front.Host}
	pol, err := json.Marshal(map[string]any{
		"Audience": e.brokerURL,
		"BaseUrl":  e.cloud.DICOMweb.URL() + "/v1/",
		"Accounts": accounts,
		"Agents":   agents,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	polPath := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(polPath, pol, 0o600); err != nil {
		lis.Close()
		return nil, err
	}
	e.brk, err = broker.New(ctx, broker.Config{
		PolicyRef: polPath,
		RateLimit: 0, // off: the cycle measurement calls far faster than a real agent
		Log:       cloudlog.New(io.Discard, slog.LevelInfo),
		Now:       e.clk.Now,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	e.srv = &http.Server{Handler: e.brk, ReadHeaderTimeout: 10 * time.Second}
	go e.srv.Serve(lis)
	return e, nil
}

// close stops everything newEnv started.
func (e *env) close() {
	if e.srv != nil {
		e.srv.Close()
	}
	if e.brk != nil {
		e.brk.Close()
	}
	for _, s := range e.sites {
		if s.orthanc != nil {
			if err := s.orthanc.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "bench/agent: %v\n", err)
			}
		}
	}
	if e.cloud != nil {
		e.cloud.Close()
	}
}

// writeAgentConfig writes the agent's JSON config for site s (the shape of
// docs/agent.md) and returns its path and health address.
func (e *env) writeAgentConfig(s *site, checkInterval time.Duration, tag string) (path, listen string, err error) {
	listen, err = freeLoopbackAddr()
	if err != nil {
		return "", "", err
	}
	cfg := map[string]any{
		"Broker": map[string]any{"Url": e.brokerURL, "AgentId": s.agentID, "KeyFile": s.keyPath, "HttpsCACertificates": "", "Timeout": "30s"},
		"Orthanc": map[string]any{"Url": s.orthanc.URL, "Username": orthancUser, "PasswordFile": e.pwPath,
			"DicomWebRoot": orthancproc.DICOMwebRoot},
		"Accounts":      []string{},
		"ServerOptions": serverOptions,
		"RefreshMargin": "10m",
		"CheckInterval": checkInterval.String(),
		"Listen":        listen,

		"AllowedDicomWebHosts": e.allowedHosts,
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(e.dir, fmt.Sprintf("agent-%s-%s.json", s.agentID, tag))
	return path, listen, os.WriteFile(path, data, 0o600)
}

// managedBy counts the entries of o that carry agentID's marker
// (GET /dicom-web/servers?expand shows user properties).
func managedBy(ctx context.Context, o *orthancproc.Instance, agentID string) (int, error) {
	var all map[string]map[string]any
	if err := o.DoContext(ctx, http.MethodGet, orthancproc.DICOMwebRoot+"servers?expand", nil, &all); err != nil {
		return 0, err
	}
	n := 0
	for _, srv := range all {
		if srv["OrthancGcpAgent"] == agentID {
			n++
		}
	}
	return n, nil
}

// hasAll reports whether names holds every name of want.
func hasAll(names, want []string) bool {
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func randomPassword() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("bench/agent: crypto/rand failed"))
	}
	return hex.EncodeToString(b)
}
