package packaging

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/reconcile"
)

// TestRulesUseExportedMetrics: promtool's tests of the alerting rules run
// on made-up series, so they pass just as well for a metric the agent
// does not export (renamed, never added) and the rule would never fire.
// Every orthanc_gcp_agent_* name in the rules and in their tests' series
// must be one the agent's /metrics serves, and every reason or state
// value they name one the agent can put in that label.
func TestRulesUseExportedMetrics(t *testing.T) {
	root := repoRoot(t)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	var tests struct {
		Tests []struct {
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	for file, v := range map[string]any{"orthanc-gcp-agent.rules.yml": &rules, "orthanc-gcp-agent.rules.test.yml": &tests} {
		b, err := os.ReadFile(filepath.Join(root, "packaging", file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 5 {
		t.Fatalf("only %d rules read", len(exprs))
	}
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			exprs = append(exprs, s.Series)
		}
	}

	// What a running agent serves: a store with a token, so every metric
	// derived from the status is there too.
	exp := time.Date(2030, 1, 1, 13, 0, 0, 0, time.UTC)
	status := health.Status{Resubmit: "enabled (DICOMweb 1.20)",
		Stores: []reconcile.StoreStatus{{Store: "a", Server: "a", State: reconcile.StateOK, Pushed: true, TokenExpiresAt: &exp}}}
	m := health.NewMetrics()
	srv := httptest.NewServer(health.Handler(func() health.Status { return status }, m,
		func() time.Time { return exp.Add(-time.Hour) }))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			exported[f[2]] = true
		}
	}
	values := map[string][]string{
		"reason": append(reconcile.Reasons(), health.ReasonOther),
		"state":  health.ResubmitStates,
	}

	selector := regexp.MustCompile(`(orthanc_gcp_agent_[a-z_]+)(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-z_]+)\s*(=~|=|!=|!~)\s*"([^"]*)"`)
	for _, e := range exprs {
		for _, sel := range selector.FindAllStringSubmatch(e, -1) {
			if !exported[sel[1]] {
				t.Errorf("%q: the agent exports no %s", e, sel[1])
			}
			for _, mt := range matcher.FindAllStringSubmatch(sel[2], -1) {
				allowed, ok := values[mt[1]]
				if !ok || strings.HasPrefix(mt[2], "!") {
					continue
				}
				for _, v := range strings.Split(mt[3], "|") {
					if !slices.Contains(allowed, v) {
						t.Errorf("%q: %s=%q is not a value the agent exports (%v)", e, mt[1], v, allowed)
					}
				}
			}
		}
	}
}
