// Package stack starts and stops the whole system on loopback, for the
// end-to-end tests and the demo: the Google fakes (in process), an Orthanc
// "cloud" that plays the Healthcare API's DICOM stores behind the fake
// DICOMweb front, an Orthanc "site" with Basic auth, the broker process
// (file policy, service-account keys generated on the fly) and the agent
// process (its key from "agent keygen"). It can kill and restart parts,
// rewrite the policy, read the logs and wait for conditions; Close stops
// everything it started.
package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/resubmit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// Fixed names of the simulated deployment.
const (
	ProjectID   = "demo-project"
	Location    = "europe-west2"
	Dataset     = "orthanc-demo"
	BrokerEmail = "broker@" + ProjectID + ".iam.gserviceaccount.com"
	// AgentID is the agent's id in the policy and its marker in Orthanc.
	AgentID = "site-a"
	// AgentUser is the site Orthanc user the agent logs in as; AdminUser is
	// the one Stack.Site.Do uses (orthancproc picks the alphabetically first).
	AgentUser = "agent"
	AdminUser = "admin"
	// CloudUser is the cloud Orthanc user the DICOMweb front proxies as.
	CloudUser = "healthcare"
)

// Options shape a stack; zero values take the defaults.
type Options struct {
	// Dir receives keys, configs, Orthanc storage and logs. Empty: a new
	// temporary directory that Close removes.
	Dir string
	// Bin are prebuilt broker and agent binaries; empty: built into Dir/bin.
	Bin Binaries
	// Stores is the number of DICOM stores (default 1), named StoreName(i).
	Stores int
	// TokenLifetime of the fake Google tokens (default 1h).
	TokenLifetime time.Duration
	// RefreshMargin and CheckInterval of the agent (defaults 10m and 2s).
	RefreshMargin, CheckInterval time.Duration
	// BrokerRefresh is BROKER_REFRESH (default 1s so policy edits apply fast).
	BrokerRefresh time.Duration
	// BrokerMinRemaining is BROKER_MIN_REMAINING (0: the broker's default).
	BrokerMinRemaining time.Duration
	// SecretManager puts the service-account keys in the fake Secret Manager
	// (sm:// references) instead of 0600 files.
	SecretManager bool
	// PolicyInBucket serves the broker's policy from the fake Cloud Storage
	// as fragments under gs://PolicyBucket/PolicyPrefix (as the Terraform
	// module lays it out) instead of a file; PolicyPath is still written,
	// as a copy for reading.
	PolicyInBucket bool
	// TapBroker puts a recording proxy (BrokerTap) between agent and broker.
	TapBroker bool
	// AgentLogLevel is AGENT_LOG_LEVEL (default info).
	AgentLogLevel string
	// ReadyTimeout bounds each wait for a part to come up (default 30s).
	ReadyTimeout time.Duration
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
	// Now is the clock for measurements and deadlines (default time.Now).
	Now func() time.Time
}

// StoreName is the name of the i-th store (0-based): store-a, store-b, ...
func StoreName(i int) string {
	if i < 26 {
		return "store-" + string(rune('a'+i))
	}
	return "store-" + strconv.Itoa(i)
}

// Store is one simulated Healthcare DICOM store.
type Store struct {
	// Name is the policy account and the Orthanc DICOMweb server name.
	Name string
	// Path is projects/P/locations/L/datasets/D/dicomStores/S.
	Path string
	// ServiceAccount is the principal whose tokens the store accepts.
	ServiceAccount string
	// KeyID is the service-account key the broker signs with.
	KeyID string
	// Secret is the policy's ServiceAccountSecret (file path or sm://).
	Secret string
	// DICOMwebURL is the URL the broker hands out for this store.
	DICOMwebURL string
}

// Stack is a running system.
type Stack struct {
	Opts Options
	Dir  string
	Bin  Binaries

	Cloud        *fakegcp.Cloud
	Front        *FrontRecorder
	CloudOrthanc *orthancproc.Instance
	Site         *orthancproc.Instance
	Tap          *BrokerTap // nil unless Options.TapBroker

	// BrokerURL is the broker's own address; AgentBrokerURL is what the
	// agent uses (the tap's URL when tapped) and the policy's Audience.
	BrokerURL, AgentBrokerURL string
	AgentID                   string
	// AgentListen is the agent's health/metrics address.
	AgentListen string
	// AgentAllowedDicomWebHosts is the agent's AllowedDicomWebHosts: the
	// fake Healthcare front's loopback host:port, listed explicitly (the
	// default allows only healthcare.googleapis.com).
	AgentAllowedDicomWebHosts []string
	// AgentPublicKey is the line "agent keygen" printed.
	AgentPublicKey string
	// Paths of generated files.
	PolicyPath, AgentConfigPath, AgentKeyPath, AgentPasswordPath string
	BrokerLogPath, AgentLogPath                                  string
	// FakesLogPath is the Google fakes' log (tokens minted, grants and
	// secret reads refused, the DICOMweb front's refusals); FrontLogPath
	// has one line per request the DICOMweb front answered and TapLogPath
	// one per agent request through the broker tap (no token values, only
	// fingerprints).
	FakesLogPath, FrontLogPath, TapLogPath string
	// AgentStatePath is the agent's record of re-sent uploads (in its
	// StateDirectory, by default the key's directory); it exists once the
	// agent has sent a failed upload again.
	AgentStatePath string

	stores []Store
	broker *process
	agent  *process
	ownDir bool
	now    func() time.Time
	logf   func(string, ...any)

	eventLogs []*eventLog
	fakesLog  *os.File

	mu            sync.Mutex
	policy        *Policy
	bucketObjects map[string][]byte // fragments last written to the bucket (PolicyInBucket)
	closed        bool
}

func (o *Options) defaults() {
	if o.Stores <= 0 {
		o.Stores = 1
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = time.Hour
	}
	if o.RefreshMargin <= 0 {
		o.RefreshMargin = 10 * time.Minute
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 2 * time.Second
	}
	if o.BrokerRefresh <= 0 {
		o.BrokerRefresh = time.Second
	}
	if o.AgentLogLevel == "" {
		o.AgentLogLevel = "info"
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// New starts everything and returns once the agent reports every store
// pushed to the site Orthanc. On error, whatever was started is stopped.
func New(ctx context.Context, opts Options) (*Stack, error) {
	opts.defaults()
	if err := orthancproc.Available(); err != nil {
		return nil, err
	}
	s := &Stack{Opts: opts, AgentID: AgentID, now: opts.Now, logf: opts.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// start brings the parts up in dependency order; New stops them on error.
func (s *Stack) start(ctx context.Context) (err error) {
	opts := s.Opts
	if opts.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "orthanc-gcp-stack-"); err != nil {
			return err
		}
		s.ownDir = true
	} else {
		s.Dir = opts.Dir
	}
	for _, d := range []string{"bin", "logs", "secrets", "agent", "broker-home", "agent-home"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			return err
		}
	}
	s.BrokerLogPath = filepath.Join(s.Dir, "logs", "broker.log")
	s.AgentLogPath = filepath.Join(s.Dir, "logs", "agent.log")
	s.FakesLogPath = filepath.Join(s.Dir, "logs", "fakes.log")
	s.FrontLogPath = filepath.Join(s.Dir, "logs", "front.log")
	s.TapLogPath = filepath.Join(s.Dir, "logs", "tap.log")

	s.Bin = opts.Bin
	if !s.Bin.Exist() {
		t0 := s.now()
		if s.Bin, err = Build(ctx, filepath.Join(s.Dir, "bin")); err != nil {
			return err
		}
		s.logf("stack: built broker and agent in %s", s.now().Sub(t0).Round(time.Millisecond))
	}

	// The Google fakes, in this process so tests can steer them.
	if s.fakesLog, err = os.OpenFile(s.FakesLogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return err
	}
	if s.Cloud, err = fakegcp.StartCloudOn(fakegcp.Addrs{}, BrokerEmail, ProjectID, slog.New(slog.NewJSONHandler(s.fakesLog, nil))); err != nil {
		return err
	}
	s.Cloud.Tokens.SetLifetime(opts.TokenLifetime)
	if s.Front, err = startFrontRecorder(s.Cloud.DICOMweb); err != nil {
		return err
	}
	if s.Front.log, err = s.openEventLog(s.FrontLogPath); err != nil {
		return err
	}

	if err := s.startOrthancs(); err != nil {
		return err
	}
	if err := s.provisionStores(); err != nil {
		return err
	}
	if err := s.keygen(ctx); err != nil {
		return err
	}
	if err := s.startFirstBroker(); err != nil {
		return err
	}
	if err := s.setupAgent(); err != nil {
		return err
	}
	if err := s.StartAgent(); err != nil {
		return err
	}
	if _, err := s.WaitFor(ctx, opts.ReadyTimeout, "agent healthy with every store pushed", s.agentHealthy); err != nil {
		return err
	}
	s.logf("stack: ready in %s (site %s, cloud %s, broker %s, agent %s)", s.Dir, s.Site.URL, s.CloudOrthanc.URL, s.BrokerURL, s.AgentListen)
	return nil
}

// openEventLog opens a log that Close closes.
func (s *Stack) openEventLog(path string) (*eventLog, error) {
	l, err := openEventLog(path)
	if err == nil {
		s.eventLogs = append(s.eventLogs, l)
	}
	return l, err
}

func randomSecret() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic("stack: crypto/rand failed")
	}
	return hex.EncodeToString(b)
}

func (s *Stack) startOrthancs() error {
	type result struct {
		inst *orthancproc.Instance
		err  error
	}
	cloudCh, siteCh := make(chan result, 1), make(chan result, 1)
	// Two independent starts: run them side by side.
	go func() {
		inst, err := orthancproc.Start(orthancproc.Options{
			Name: "cloud", Dir: filepath.Join(s.Dir, "orthanc-cloud"),
			Users: map[string]string{CloudUser: randomSecret()},
		})
		cloudCh <- result{inst, err}
	}()
	go func() {
		inst, err := orthancproc.Start(orthancproc.Options{
			Name: "site", Dir: filepath.Join(s.Dir, "orthanc-site"),
			Users: map[string]string{AdminUser: randomSecret(), AgentUser: randomSecret()},
		})
		siteCh <- result{inst, err}
	}()
	c, st := <-cloudCh, <-siteCh
	s.CloudOrthanc, s.Site = c.inst, st.inst
	return errors.Join(c.err, st.err)
}

func (s *Stack) provisionStores() error {
	cloudUser, cloudPass := s.CloudOrthanc.User()
	for i := 0; i < s.Opts.Stores; i++ {
		name := StoreName(i)
		st := Store{
			Name:           name,
			Path:           fmt.Sprintf("projects/%s/locations/%s/datasets/%s/dicomStores/%s", ProjectID, Location, Dataset, name),
			ServiceAccount: name + "@" + ProjectID + ".iam.gserviceaccount.com",
		}
		cred, keyID, err := s.Cloud.Tokens.NewServiceAccountKey(st.ServiceAccount)
		if err != nil {
			return err
		}
		st.KeyID = keyID
		if s.Opts.SecretManager {
			secret := "projects/" + ProjectID + "/secrets/" + name + "-key"
			s.Cloud.SecretManager.AddVersion(secret, cred)
			st.Secret = "sm://" + secret + "/versions/latest"
		} else {
			st.Secret = filepath.Join(s.Dir, "secrets", name+"-key.json")
			if err := os.WriteFile(st.Secret, cred, 0o600); err != nil {
				return err
			}
		}
		// One cloud Orthanc backs every store path.
		s.Cloud.DICOMweb.AddStore(st.Path, s.CloudOrthanc.URL+orthancproc.DICOMwebRoot, cloudUser, cloudPass, st.ServiceAccount)
		st.DICOMwebURL = s.Front.URL() + "/v1/" + st.Path + "/dicomWeb/"
		s.stores = append(s.stores, st)
	}
	return nil
}

func (s *Stack) keygen(ctx context.Context) error {
	s.AgentKeyPath = filepath.Join(s.Dir, "agent", "agent.key")
	s.AgentStatePath = filepath.Join(filepath.Dir(s.AgentKeyPath), resubmit.StateFileName)
	cmd := exec.CommandContext(ctx, s.Bin.Agent, "keygen", "--out", s.AgentKeyPath)
	cmd.Env = s.baseEnv(filepath.Join(s.Dir, "agent-home"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("stack: agent keygen: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	line := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(line, "ed25519:") {
		return fmt.Errorf("stack: agent keygen printed %q, want an ed25519: line", line)
	}
	s.AgentPublicKey = line
	return nil
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// baseEnv is a clean environment: nothing of the caller's (AGENT_* or
// GOOGLE_* variables would change what runs) but PATH and a private HOME,
// so no gcloud ADC file is found.
func (s *Stack) baseEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TZ=UTC"}
}

// brokerPort picks the broker's port (a variable so a test can hand out a
// taken one first).
var brokerPort = freeLoopbackPort

func (s *Stack) setupBroker() error {
	port, err := brokerPort()
	if err != nil {
		return err
	}
	s.BrokerURL = "http://127.0.0.1:" + strconv.Itoa(port)
	s.AgentBrokerURL = s.BrokerURL
	if s.Opts.TapBroker {
		if s.Tap, err = startBrokerTap(s.BrokerURL, s.now); err != nil {
			return err
		}
		if s.Tap.log, err = s.openEventLog(s.TapLogPath); err != nil {
			return err
		}
		s.AgentBrokerURL = s.Tap.URL()
	}
	p := &Policy{
		Audience: s.AgentBrokerURL,
		BaseUrl:  s.Front.URL() + "/v1/",
		Accounts: map[string]*PolicyAccount{},
		Agents:   map[string]*PolicyAgent{AgentID: {PublicKey: s.AgentPublicKey}},
	}
	for _, st := range s.stores {
		p.Accounts[st.Name] = &PolicyAccount{Project: ProjectID, Location: Location, Dataset: Dataset,
			DicomStore: st.Name, ServiceAccountSecret: st.Secret}
		p.Agents[AgentID].Accounts = append(p.Agents[AgentID].Accounts, st.Name)
	}
	s.PolicyPath = filepath.Join(s.Dir, "secrets", "broker-policy.json")
	if err := writePolicy(s.PolicyPath, p); err != nil {
		return err
	}
	if s.Opts.PolicyInBucket {
		if err := s.writeBucketPolicy(p); err != nil {
			return err
		}
	}
	s.policy = p
	env := append(s.baseEnv(filepath.Join(s.Dir, "broker-home")),
		"PORT="+strconv.Itoa(port),
		"BROKER_LISTEN_HOST=127.0.0.1",
		"BROKER_CONFIG="+s.PolicyRef(),
		"BROKER_STORAGE_ENDPOINT="+s.Cloud.Storage.URL(),
		"BROKER_REFRESH="+s.Opts.BrokerRefresh.String(),
		"BROKER_RATE_LIMIT=50",
		"BROKER_SECRETMANAGER_ENDPOINT="+s.Cloud.SecretManager.Addr(),
		"BROKER_IAMCREDENTIALS_ENDPOINT="+s.Cloud.IAM.URL(),
		"GCE_METADATA_HOST="+s.Cloud.Metadata.Host(),
	)
	if s.Opts.BrokerMinRemaining > 0 {
		env = append(env, "BROKER_MIN_REMAINING="+s.Opts.BrokerMinRemaining.String())
	}
	s.broker = &process{name: "broker", path: s.Bin.Broker, env: env, logPath: s.BrokerLogPath}
	return nil
}

// agentFile is the agent configuration as written (see docs/agent.md).
type agentFile struct {
	Broker               map[string]string
	Orthanc              map[string]string
	ServerOptions        map[string]any
	RefreshMargin        string
	CheckInterval        string
	Listen               string
	AllowedDicomWebHosts []string
}

func (s *Stack) setupAgent() error {
	agentPass := s.siteUsers()[AgentUser]
	if agentPass == "" {
		return errors.New("stack: the site Orthanc has no agent user")
	}
	s.AgentPasswordPath = filepath.Join(s.Dir, "agent", "orthanc-password")
	if err := os.WriteFile(s.AgentPasswordPath, []byte(agentPass+"\n"), 0o600); err != nil {
		return err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	s.AgentListen = "127.0.0.1:" + strconv.Itoa(port)
	front, err := url.Parse(s.Front.URL())
	if err != nil || front.Port() == "" {
		return fmt.Errorf("stack: the fake Healthcare front's URL %q has no port", s.Front.URL())
	}
	s.AgentAllowedDicomWebHosts = []string{front.Host} // http to loopback: host:port
	cfg := agentFile{
		Broker: map[string]string{"Url": s.AgentBrokerURL, "AgentId": AgentID, "KeyFile": s.AgentKeyPath, "Timeout": "10s"},
		Orthanc: map[string]string{"Url": s.Site.URL, "Username": AgentUser, "PasswordFile": s.AgentPasswordPath,
			"DicomWebRoot": orthancproc.DICOMwebRoot},
		ServerOptions: map[string]any{"HasDelete": true, "ChunkedTransfers": true, "Timeout": 600},
		RefreshMargin: s.Opts.RefreshMargin.String(),
		CheckInterval: s.Opts.CheckInterval.String(),
		Listen:        s.AgentListen,

		AllowedDicomWebHosts: s.AgentAllowedDicomWebHosts,
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	s.AgentConfigPath = filepath.Join(s.Dir, "agent", "agent.json")
	if err := os.WriteFile(s.AgentConfigPath, data, 0o600); err != nil {
		return err
	}
	env := append(s.baseEnv(filepath.Join(s.Dir, "agent-home")), "AGENT_LOG_LEVEL="+s.Opts.AgentLogLevel)
	s.agent = &process{name: "agent", path: s.Bin.Agent, args: []string{"run", "--config", s.AgentConfigPath},
		env: env, logPath: s.AgentLogPath}
	return nil
}

// siteUsers returns the site Orthanc's registered users from its config.
func (s *Stack) siteUsers() map[string]string {
	out := map[string]string{}
	if users, ok := s.Site.Config()["RegisteredUsers"].(map[string]any); ok {
		for u, p := range users {
			if ps, ok := p.(string); ok {
				out[u] = ps
			}
		}
	}
	return out
}

// Stores lists the stores.
func (s *Stack) Stores() []Store { return append([]Store(nil), s.stores...) }

// Store returns the named store, or nil.
func (s *Stack) Store(name string) *Store {
	for i := range s.stores {
		if s.stores[i].Name == name {
			st := s.stores[i]
			return &st
		}
	}
	return nil
}

// startFirstBroker sets the broker up on a free port and starts it. The
// port is free when it is chosen, but the broker binds it a moment later,
// and on a loaded machine another process's outgoing connection can take it
// in between ("address already in use"): then the broker is set up again on
// another port, up to three times.
func (s *Stack) startFirstBroker() error {
	for attempt := 1; ; attempt++ {
		if err := s.setupBroker(); err != nil {
			return err
		}
		err := s.StartBroker()
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		s.logf("stack: broker port of %s was taken before the broker bound it; setting it up on another", s.BrokerURL)
		if s.Tap != nil {
			s.Tap.close()
			s.Tap = nil
		}
	}
}

// StartBroker starts the broker process (on the same port every time) and
// waits until GET /healthz answers 200.
func (s *Stack) StartBroker() error {
	if err := s.broker.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Opts.ReadyTimeout)
	defer cancel()
	exited := s.broker.exited()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	_, err := s.WaitFor(ctx, s.Opts.ReadyTimeout, "broker /healthz", func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("%w (%v); last log lines:\n%s", errNotRunning, s.broker.exitErr(), tail(s.BrokerLogPath, 10))
		default:
		}
		resp, err := client.Get(s.BrokerURL + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("HTTP %d", resp.StatusCode)
	})
	if err != nil {
		_ = s.broker.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("stack: broker did not come up: %w", err)
	}
	s.logf("stack: broker pid %d listening on %s", s.broker.pid(), s.BrokerURL)
	return nil
}

// KillBroker kills the broker with SIGKILL (a crash, not a shutdown) and
// waits until it is gone.
func (s *Stack) KillBroker() error {
	err := s.broker.stop(syscall.SIGKILL, time.Second)
	s.logf("stack: broker killed")
	return err
}

// StartAgent starts the agent process ("agent run"); it does not wait for
// the agent to be healthy (see WaitAgentHealthy).
func (s *Stack) StartAgent() error {
	if err := s.agent.start(); err != nil {
		return err
	}
	s.logf("stack: agent pid %d, status at %s", s.agent.pid(), s.AgentListen)
	return nil
}

// StopAgent stops the agent as systemd does (SIGTERM) and waits until it
// has exited; the entries it pushed stay in Orthanc. StartAgent starts it
// again.
func (s *Stack) StopAgent() error {
	err := s.agent.stop(syscall.SIGTERM, 5*time.Second)
	s.logf("stack: agent stopped")
	return err
}

// ReloadAgent sends the agent SIGHUP: it re-reads its configuration and
// syncs with the broker at once.
func (s *Stack) ReloadAgent() error {
	pid := s.agent.pid()
	if pid == 0 {
		return fmt.Errorf("stack: agent %w", errNotRunning)
	}
	return syscall.Kill(pid, syscall.SIGHUP)
}

// RestartSite restarts the site Orthanc (same ports, same storage); its
// REST-created DICOMweb entries are gone afterwards, as with any restart.
func (s *Stack) RestartSite() error { return s.Site.Restart() }

// AgentStatus reads the agent's /healthz.
func (s *Stack) AgentStatus(ctx context.Context) (*health.Status, error) {
	return health.Fetch(ctx, s.AgentListen)
}

// agentHealthy is a WaitFor condition: the agent runs and reports healthy
// with every store pushed.
func (s *Stack) agentHealthy() (bool, error) {
	if !s.agent.running() {
		return false, fmt.Errorf("agent %w (%v); last log lines:\n%s", errNotRunning, s.agent.exitErr(), tail(s.AgentLogPath, 10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := s.AgentStatus(ctx)
	if err != nil {
		return false, err
	}
	if !st.Healthy || len(st.Stores) != len(s.Policy().Agents[AgentID].Accounts) {
		return false, fmt.Errorf("agent not healthy: %s", st.Reason)
	}
	return true, nil
}

// WaitAgentHealthy waits until the agent reports every granted store pushed.
func (s *Stack) WaitAgentHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	return s.WaitFor(ctx, timeout, "agent healthy", s.agentHealthy)
}

// ManagedServers lists the site Orthanc's DICOMweb entries that carry the
// agent's marker, read as the agent reads them.
func (s *Stack) ManagedServers(ctx context.Context) (map[string]orthanc.Server, error) {
	user, pass := s.Site.User()
	// Only reads: an empty allow-list, so this client can push nowhere.
	c, err := orthanc.New(orthanc.Options{URL: s.Site.URL, DicomWebRoot: orthancproc.DICOMwebRoot, Username: user, Password: pass, Timeout: 5 * time.Second},
		&urlrule.AllowList{})
	if err != nil {
		return nil, err
	}
	all, err := c.ListServers(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]orthanc.Server{}
	for name, srv := range all {
		if srv.ManagedBy(s.AgentID) {
			out[name] = srv
		}
	}
	return out, nil
}

// PollInterval is how often WaitFor checks its condition.
var PollInterval = 50 * time.Millisecond

// WaitFor polls cond every PollInterval until it returns true, ctx ends or
// timeout passes, and returns how long it waited. cond's errors mean "not
// yet" and the last one is reported on timeout; an error wrapping
// errNotRunning (a process died) ends the wait at once.
func (s *Stack) WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) (time.Duration, error) {
	start := s.now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return s.now().Sub(start), nil
		}
		if err != nil {
			last = err
			if errors.Is(err, errNotRunning) {
				return s.now().Sub(start), fmt.Errorf("stack: waiting for %s: %w", what, err)
			}
		}
		select {
		case <-ctx.Done():
			return s.now().Sub(start), fmt.Errorf("stack: %s not reached after %s (last: %v)", what, s.now().Sub(start).Round(time.Millisecond), last)
		case <-time.After(PollInterval):
		}
	}
}

// BrokerLogs returns everything the broker wrote (stdout and stderr, all runs).
func (s *Stack) BrokerLogs() ([]byte, error) { return os.ReadFile(s.BrokerLogPath) }

// AgentLogs returns everything the agent wrote (stdout and stderr, all runs).
func (s *Stack) AgentLogs() ([]byte, error) { return os.ReadFile(s.AgentLogPath) }

// AuditLine is one "token_issued" line of the broker's log.
type AuditLine struct {
	Agent       string    `json:"agent"`
	Account     string    `json:"account"`
	ExpiresAt   time.Time `json:"expires_at"`
	Fingerprint string    `json:"-"` // under wire.FingerprintKey
	Cached      bool      `json:"cached"`
	Client      string    `json:"client"`
}

// Audit parses the broker's audit lines, in order.
func (s *Stack) Audit() ([]AuditLine, error) {
	data, err := s.BrokerLogs()
	if err != nil {
		return nil, err
	}
	var out []AuditLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"token_issued"`)) {
			continue
		}
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &probe) != nil || probe.Event != "token_issued" {
			continue
		}
		var a AuditLine
		if err := json.Unmarshal(line, &a); err != nil {
			return nil, fmt.Errorf("stack: audit line: %w", err)
		}
		// The fingerprint's key is the contract's, not a struct tag here.
		var fp map[string]json.RawMessage
		if err := json.Unmarshal(line, &fp); err != nil || json.Unmarshal(fp[wire.FingerprintKey], &a.Fingerprint) != nil {
			return nil, fmt.Errorf("stack: audit line without %s", wire.FingerprintKey)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// HandedOut is every token the broker handed out, in order, with its
// plaintext: each audit line (one per issuance, written before the answer)
// joined by its fingerprint with the token the fake token server minted.
// The answers themselves are sealed to keys only the agent holds.
func (s *Stack) HandedOut() ([]HandedOutToken, error) {
	lines, err := s.Audit()
	if err != nil {
		return nil, err
	}
	out := make([]HandedOutToken, 0, len(lines))
	for _, a := range lines {
		tok, ok := s.Cloud.Tokens.ByFingerprint(a.Fingerprint)
		if !ok {
			return nil, fmt.Errorf("stack: audit line for %s (fingerprint %s) names no token the token server minted", a.Account, a.Fingerprint)
		}
		out = append(out, HandedOutToken{Store: a.Account, AccessToken: tok, ExpiresAt: a.ExpiresAt})
	}
	return out, nil
}

// HandedOutToken is one issuance: the store, the plaintext token and its
// expiry.
type HandedOutToken struct {
	Store       string
	AccessToken string
	ExpiresAt   time.Time
}

// DistinctTokens lists each token value the broker handed out once, sorted.
func (s *Stack) DistinctTokens() ([]string, error) {
	h, err := s.HandedOut()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, t := range h {
		seen[t.AccessToken] = true
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// tail returns the last n lines of a log file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close stops the agent, the broker, both Orthancs and the fakes, and
// removes Dir if New created it. It is safe to call more than once.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	var errs []error
	if s.agent != nil {
		errs = append(errs, s.agent.stop(syscall.SIGTERM, 5*time.Second))
	}
	if s.broker != nil {
		errs = append(errs, s.broker.stop(syscall.SIGTERM, 5*time.Second))
	}
	if s.Tap != nil {
		s.Tap.close()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, o := range []*orthancproc.Instance{s.Site, s.CloudOrthanc} {
		if o == nil {
			continue
		}
		wg.Add(1)
		go func() { // each takes seconds to shut down: stop them together
			defer wg.Done()
			err := o.Stop()
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if s.Front != nil {
		s.Front.close()
	}
	if s.Cloud != nil {
		s.Cloud.Close()
	}
	for _, l := range s.eventLogs {
		l.close()
	}
	if s.fakesLog != nil {
		_ = s.fakesLog.Close()
	}
	if s.ownDir {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}
