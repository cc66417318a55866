package deploy

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// The log lines a real broker writes for each kind of request below, and
// how many of each: the metric (by its resource name in terraform/) that
// must count exactly those.
var wantCounts = map[string]int{
	"tokens_issued": 1, // one store minted and handed out
	"auth_failures": 2, // a wrong key and an unknown agent
	"mint_failures": 1, // one store whose credential secret does not exist
}

// Fields Cloud Run, not the broker, puts on every entry of the service.
// Their values in a filter are checked against what Cloud Run sets for the
// module's default service_name (see cloudRunEntry).
var platformFields = map[string]bool{"resource.type": true, "resource.labels.service_name": true}

// TestMonitoringFiltersMatchTheBrokersLines runs the real broker binary
// against the Google fakes, makes it issue a token, refuse two assertions
// and fail a mint, and checks terraform/'s log-based metrics and alert
// policies against the lines it wrote on standard output: every field a
// filter or label extractor names is one the broker writes, each metric
// counts exactly the lines it is meant to, and each alert reads a metric
// and labels the module defines.
func TestMonitoringFiltersMatchTheBrokersLines(t *testing.T) {
	mod, err := readModule(filepath.Join("..", "terraform"))
	if err != nil {
		t.Fatal(err)
	}
	entries := brokerEntries(t, mod.ServiceName)
	for _, err := range checkModule(mod, entries, wantCounts) {
		t.Error(err)
	}
}

// The check itself fails on the mistakes it is there for: each case breaks
// one thing in the module as read, against the same real lines.
func TestMonitoringCheckCatchesMistakes(t *testing.T) {
	mod, err := readModule(filepath.Join("..", "terraform"))
	if err != nil {
		t.Fatal(err)
	}
	entries := brokerEntries(t, mod.ServiceName)
	byResource := func(m *module, r string) *logMetric {
		for _, lm := range m.Metrics {
			if lm.Resource == r {
				return lm
			}
		}
		t.Fatalf("no google_logging_metric.%s in terraform/", r)
		return nil
	}
	tests := []struct {
		name   string
		mutate func(m *module)
		want   string
	}{
		{"filter names a field the broker does not write", func(m *module) {
			lm := byResource(m, "tokens_issued")
			lm.Filter = strings.Replace(lm.Filter, "jsonPayload.event", "jsonPayload.event_type", 1)
		}, "jsonPayload.event_type"},
		{"filter compares with a value the broker never writes", func(m *module) {
			lm := byResource(m, "mint_failures")
			lm.Filter = strings.Replace(lm.Filter, `"mint_failed"`, `"mint_failure"`, 1)
		}, "counts 0 lines"},
		{"filter at the wrong severity", func(m *module) {
			lm := byResource(m, "auth_failures")
			lm.Filter = strings.Replace(lm.Filter, "severity=WARNING", "severity=ERROR", 1)
		}, "counts 0 lines"},
		{"extractor reads a field the broker does not write", func(m *module) {
			byResource(m, "tokens_issued").Extractor["agent"] = "EXTRACT(jsonPayload.agent_id)"
		}, "jsonPayload.agent_id"},
		{"filter uses syntax the check cannot evaluate", func(m *module) {
			lm := byResource(m, "tokens_issued")
			lm.Filter += ` OR jsonPayload.cached=true`
		}, "not a comparison"},
		{"alert groups by a label the metric lacks", func(m *module) {
			for i, c := range m.Conditions {
				if c.Kind == "condition_absent" {
					m.Conditions[i].GroupBy = []string{"metric.label.site"}
				}
			}
		}, "metric.label.site"},
		{"alert reads a metric the module does not define", func(m *module) {
			m.Conditions[0].Filter = strings.Replace(m.Conditions[0].Filter, "/user/", "/user/other-", 1)
		}, "not a log-based metric of the module"},
		{"platform field with the wrong value", func(m *module) {
			lm := byResource(m, "tokens_issued")
			lm.Filter = strings.Replace(lm.Filter, `"cloud_run_revision"`, `"cloud_function"`, 1)
		}, "counts 0 lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := cloneModule(mod)
			tt.mutate(m)
			errs := checkModule(m, entries, wantCounts)
			var all []string
			for _, e := range errs {
				all = append(all, e.Error())
			}
			if !strings.Contains(strings.Join(all, "\n"), tt.want) {
				t.Errorf("broken module passed or failed for another reason; want an error containing %q, got:\n%s", tt.want, strings.Join(all, "\n"))
			}
		})
	}
}

func cloneModule(m *module) *module {
	c := &module{ServiceName: m.ServiceName, Metrics: map[string]*logMetric{}}
	for k, lm := range m.Metrics {
		cp := *lm
		cp.Extractor = maps.Clone(lm.Extractor)
		c.Metrics[k] = &cp
	}
	for _, ac := range m.Conditions {
		ac.GroupBy = append([]string(nil), ac.GroupBy...)
		c.Conditions = append(c.Conditions, ac)
	}
	return c
}

// checkModule returns every way mod's metrics and alerts disagree with the
// broker's entries; want maps a metric's resource name to the number of
// entries it must count.
func checkModule(mod *module, entries []map[string]any, want map[string]int) []error {
	var errs []error
	if len(mod.Metrics) == 0 {
		errs = append(errs, fmt.Errorf("terraform/ defines no google_logging_metric"))
	}
	// Which fields the broker writes at all, for a clear message.
	written := map[string]bool{}
	for _, e := range entries {
		collectFields(e, "", written)
	}
	resources := map[string]bool{}
	resourceType := map[string]string{} // metric name -> resource.type its filter requires
	for _, name := range sortedKeys(mod.Metrics) {
		lm := mod.Metrics[name]
		resources[lm.Resource] = true
		where := "google_logging_metric." + lm.Resource
		terms, err := parseFilter(lm.Filter)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
			continue
		}
		for _, tm := range terms {
			if tm.Field == "resource.type" && tm.Op == "=" {
				resourceType[lm.Name] = tm.Value
			}
			if !platformFields[tm.Field] && !written[tm.Field] {
				errs = append(errs, fmt.Errorf("%s: the filter names %s, which no broker line has (fields written: %s)", where, tm.Field, strings.Join(sortedKeys(written), ", ")))
			}
		}
		var matched []map[string]any
		for _, e := range entries {
			ok, err := matchAll(terms, e)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", where, err))
				break
			}
			if ok {
				matched = append(matched, e)
			}
		}
		w, known := want[lm.Resource]
		switch {
		case !known:
			errs = append(errs, fmt.Errorf("%s: the test makes no broker line for this metric; add the requests and a wantCounts entry", where))
		case len(matched) != w:
			errs = append(errs, fmt.Errorf("%s counts %d lines of the broker's, want %d; filter: %s", where, len(matched), w, lm.Filter))
		}
		for _, label := range sortedKeys(lm.Extractor) {
			field, re, err := extractorField(lm.Extractor[label])
			if err != nil {
				errs = append(errs, fmt.Errorf("%s label %s: %v", where, label, err))
				continue
			}
			if !written[field] {
				errs = append(errs, fmt.Errorf("%s label %s: extracts %s, which no broker line has", where, label, field))
				continue
			}
			for _, e := range matched {
				v, ok := lookup(e, field)
				s, isStr := v.(string)
				if !ok || !isStr || s == "" {
					errs = append(errs, fmt.Errorf("%s label %s: %s is %v in a counted line, not a non-empty string", where, label, field, v))
					continue
				}
				if re != "" && !regexpMatches(re, s) {
					errs = append(errs, fmt.Errorf("%s label %s: %q does not match %s", where, label, s, re))
				}
			}
		}
	}
	for r := range want {
		if !resources[r] {
			errs = append(errs, fmt.Errorf("no google_logging_metric.%s in terraform/", r))
		}
	}
	if len(mod.Conditions) == 0 {
		errs = append(errs, fmt.Errorf("terraform/ defines no alert condition"))
	}
	const userPrefix = "logging.googleapis.com/user/"
	for _, c := range mod.Conditions {
		where := fmt.Sprintf("google_monitoring_alert_policy.%s %s", c.Policy, c.Kind)
		terms, err := parseFilter(c.Filter)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
			continue
		}
		var lm *logMetric
		for _, tm := range terms {
			if tm.Field == "metric.type" && tm.Op == "=" {
				if name, ok := strings.CutPrefix(tm.Value, userPrefix); ok {
					lm = mod.Metrics[name]
				}
				if lm == nil {
					errs = append(errs, fmt.Errorf("%s: metric.type %q is not a log-based metric of the module", where, tm.Value))
				}
			}
		}
		if lm == nil {
			continue
		}
		labels := append([]string(nil), c.GroupBy...)
		for _, tm := range terms {
			switch {
			case tm.Field == "metric.type":
			case tm.Field == "resource.type":
				if tm.Value != resourceType[lm.Name] {
					errs = append(errs, fmt.Errorf("%s: resource.type %q, but %s counts %q entries", where, tm.Value, lm.Name, resourceType[lm.Name]))
				}
			case strings.HasPrefix(tm.Field, "metric.label."):
				labels = append(labels, tm.Field)
			default:
				errs = append(errs, fmt.Errorf("%s: the filter names %s, which this check does not know a log-based metric to have", where, tm.Field))
			}
		}
		for _, l := range labels {
			key, ok := strings.CutPrefix(l, "metric.label.")
			if _, defined := lm.Extractor[key]; !ok || !defined {
				errs = append(errs, fmt.Errorf("%s: %s is not a label of %s (labels: %s)", where, l, lm.Name, strings.Join(sortedKeys(lm.Extractor), ", ")))
			}
		}
	}
	return errs
}

// regexpMatches applies an extractor's expression (RE2, as Cloud Logging's).
func regexpMatches(re, s string) bool {
	r, err := regexp.Compile(re)
	return err == nil && r.MatchString(s)
}

// collectFields adds every leaf path of v under prefix.
func collectFields(v any, prefix string, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = true
		return
	}
	for k, x := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		out[p] = true
		collectFields(x, p, out)
	}
}

// cloudRunEntry is how Cloud Logging stores one JSON line a Cloud Run
// service wrote on standard output (docs: "Structured logging", special
// JSON fields): severity becomes the entry's severity, time its timestamp,
// logging.googleapis.com/labels its labels, and the other fields, message
// included, its jsonPayload. The resource is the revision of the service.
func cloudRunEntry(line map[string]any, service string) map[string]any {
	payload := maps.Clone(line)
	entry := map[string]any{
		"resource": map[string]any{"type": "cloud_run_revision", "labels": map[string]any{
			"service_name": service, "revision_name": service + "-00001-abc", "configuration_name": service,
			"location": "europe-west2", "project_id": "my-broker-project",
		}},
		"logName":  "projects/my-broker-project/logs/run.googleapis.com%2Fstdout",
		"severity": "DEFAULT",
	}
	if s, ok := payload["severity"]; ok {
		entry["severity"] = s
		delete(payload, "severity")
	}
	for _, k := range []string{"time", "timestamp"} {
		if v, ok := payload[k]; ok {
			entry["timestamp"] = v
			delete(payload, k)
		}
	}
	if v, ok := payload["logging.googleapis.com/labels"]; ok {
		entry["labels"] = v
		delete(payload, "logging.googleapis.com/labels")
	}
	for _, k := range []string{"logging.googleapis.com/trace", "logging.googleapis.com/spanId", "logging.googleapis.com/sourceLocation", "httpRequest"} {
		delete(payload, k)
	}
	entry["jsonPayload"] = payload
	return entry
}

var (
	entriesOnce sync.Once
	entriesErr  error
	entriesVal  []map[string]any
)

// brokerEntries runs the broker once per test binary and returns its
// standard output as Cloud Logging entries.
func brokerEntries(t *testing.T, service string) []map[string]any {
	t.Helper()
	if service == "" {
		t.Fatal("terraform/ has no default service_name")
	}
	entriesOnce.Do(func() {
		var lines []map[string]any
		lines, entriesErr = runBroker()
		for _, l := range lines {
			entriesVal = append(entriesVal, cloudRunEntry(l, service))
		}
	})
	if entriesErr != nil {
		t.Fatal(entriesErr)
	}
	return entriesVal
}

// runBroker builds ./cmd/broker, runs it with a file policy against the
// Google fakes (Secret Manager, token endpoint) and sends: one token
// request that mints for one store and fails for another, an assertion
// signed with the wrong key and one from an agent not in the policy.
func runBroker() ([]map[string]any, error) {
	dir, err := os.MkdirTemp("", "monitoring-test")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "broker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/broker")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/broker: %v\n%s", err, out)
	}

	const project, brokerEmail, storeEmail = "hc-project", "broker@hc-project.iam.gserviceaccount.com", "store@hc-project.iam.gserviceaccount.com"
	cloud, err := fakegcp.StartCloud(brokerEmail, project)
	if err != nil {
		return nil, err
	}
	defer cloud.Close()
	keyJSON, _, err := cloud.Tokens.NewServiceAccountKey(storeEmail)
	if err != nil {
		return nil, err
	}
	cloud.SecretManager.AddVersion("projects/hc-project/secrets/store-ok-sa-key", keyJSON)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	base := "http://127.0.0.1:" + port
	pub, priv, err := agentkey.Generate()
	if err != nil {
		return nil, err
	}
	_, otherKey, err := agentkey.Generate()
	if err != nil {
		return nil, err
	}
	store := func(name, secret string) map[string]any {
		return map[string]any{"Project": project, "Location": "europe-west2", "Dataset": "d", "DicomStore": name,
			"ServiceAccountSecret": "sm://projects/hc-project/secrets/" + secret + "/versions/latest"}
	}
	policy, _ := json.Marshal(map[string]any{
		"Audience": base,
		"Accounts": map[string]any{"store-ok": store("ok", "store-ok-sa-key"), "store-broken": store("broken", "never-written")},
		"Agents":   map[string]any{"clinic-a": map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": []string{"store-ok", "store-broken"}}},
	})
	policyPath := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyPath, policy, 0o600); err != nil {
		return nil, err
	}

	cmd := exec.Command(bin)
	// As the Terraform module sets it on Cloud Run, behind Google's front end.
	cmd.Env = []string{"BROKER_CONFIG=" + policyPath, "PORT=" + port, "BROKER_LISTEN_HOST=127.0.0.1",
		"BROKER_TRUSTED_PROXY_HOPS=1", "BROKER_SECRETMANAGER_ENDPOINT=" + cloud.SecretManager.Addr(),
		"GCE_METADATA_HOST=" + cloud.Metadata.Host(), "HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{}) // closed once the process is waited for
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	client := &http.Client{Timeout: 20 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited: // refused its start-up (a bad policy, the port taken)
			return nil, fmt.Errorf("broker exited before it was healthy: %s\n%s%s", cmd.ProcessState, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("broker not healthy: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	recipient, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	post := func(agent string, key ed25519.PrivateKey) (int, string, error) {
		a, err := assertion.Sign(key, agent, base, time.Now(), time.Minute, recipient.PublicKey())
		if err != nil {
			return 0, "", err
		}
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/tokens", nil)
		req.Header.Set("Authorization", "Bearer "+a)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	var resp struct {
		Tokens []struct{ Store string } `json:"tokens"`
		Errors []struct{ Store string } `json:"errors"`
	}
	status, body, err := post("clinic-a", priv)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || status != http.StatusOK ||
		len(resp.Tokens) != 1 || resp.Tokens[0].Store != "store-ok" || len(resp.Errors) != 1 || resp.Errors[0].Store != "store-broken" {
		return nil, fmt.Errorf("token request: %d %s (want a token for store-ok and an error for store-broken)", status, body)
	}
	for _, c := range []struct {
		agent string
		key   ed25519.PrivateKey
	}{{"clinic-a", otherKey}, {"clinic-zz", priv}} {
		if status, body, err := post(c.agent, c.key); err != nil || status != http.StatusUnauthorized {
			return nil, fmt.Errorf("assertion of %s with a wrong key or unknown id: %d %s %v", c.agent, status, body, err)
		}
	}
	stop()

	var lines []map[string]any
	for _, raw := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return nil, fmt.Errorf("broker stdout line is not JSON: %q", raw)
		}
		lines = append(lines, m)
	}
	return lines, nil
}
