package packaging

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// compose is the part of the Compose specification docker-compose.yml
// uses. Decoding is strict (KnownFields), so a misspelt key ("read-only",
// "network-mode") fails here instead of being ignored by Docker.
type compose struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]*struct {
		Name     string `yaml:"name"`
		External bool   `yaml:"external"`
	} `yaml:"volumes"`
}

type composeService struct {
	Image       string                       `yaml:"image"`
	Restart     string                       `yaml:"restart"`
	Profiles    []string                     `yaml:"profiles"`
	NetworkMode string                       `yaml:"network_mode"`
	Networks    []string                     `yaml:"networks"`
	Ports       []string                     `yaml:"ports"`
	DependsOn   map[string]map[string]string `yaml:"depends_on"`
	Command     []string                     `yaml:"command"`
	Entrypoint  []string                     `yaml:"entrypoint"`
	Environment map[string]string            `yaml:"environment"`
	User        string                       `yaml:"user"`
	ReadOnly    bool                         `yaml:"read_only"`
	Privileged  bool                         `yaml:"privileged"`
	CapAdd      []string                     `yaml:"cap_add"`
	CapDrop     []string                     `yaml:"cap_drop"`
	SecurityOpt []string                     `yaml:"security_opt"`
	Pid         string                       `yaml:"pid"`
	Ipc         string                       `yaml:"ipc"`
	Volumes     []composeVolume              `yaml:"volumes"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

type composeVolume struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
}

const (
	composeFile = "docker-compose.yml"
	// The image user: distroless static:nonroot's (and packaging/mkbase.sh's).
	imageUser = "65532:65532"
	// The image's entrypoint (ko: /ko-app/<last element of ./cmd/agent>);
	// packaging/agent-image-check.sh asserts the same.
	agentEntrypoint = "/ko-app/agent"
	agentConfig     = "/etc/orthanc-gcp-agent/agent.json"
	// distroless's home of nonroot: 0700, owned by the image user, so a new
	// named volume mounted there is writable by the agent.
	keyDir = "/home/nonroot"
)

// repoRoot is the repository root: go test runs in this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", composeFile))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	if got := slices.Sorted(maps.Keys(c.Services)); !slices.Equal(got, []string{"agent", "agent-keygen", "orthanc"}) {
		t.Fatalf("services %v, want agent, agent-keygen, orthanc", got)
	}

	// Every service: no privilege, no host namespaces, references that resolve.
	for name, s := range c.Services {
		if s.Privileged || len(s.CapAdd) > 0 {
			t.Errorf("%s: privileged or cap_add", name)
		}
		for _, mode := range []string{s.NetworkMode, s.Pid, s.Ipc} {
			if mode == "host" {
				t.Errorf("%s: host namespace", name)
			}
		}
		if rest, ok := strings.CutPrefix(s.NetworkMode, "service:"); ok {
			if _, exists := c.Services[rest]; !exists {
				t.Errorf("%s: network_mode %q names no service", name, s.NetworkMode)
			}
			if len(s.Ports) > 0 || len(s.Networks) > 0 {
				t.Errorf("%s: ports/networks with network_mode %q (Docker refuses them)", name, s.NetworkMode)
			}
		}
		for dep := range s.DependsOn {
			if _, exists := c.Services[dep]; !exists {
				t.Errorf("%s: depends_on %q names no service", name, dep)
			}
		}
		for _, v := range s.Volumes {
			switch v.Type {
			case "volume":
				if _, declared := c.Volumes[v.Source]; !declared {
					t.Errorf("%s: volume %q not declared under volumes:", name, v.Source)
				}
			case "bind":
				if !strings.HasPrefix(v.Source, "./") {
					t.Errorf("%s: bind %q: keep host files next to the compose file", name, v.Source)
				}
			default:
				t.Errorf("%s: volume type %q", name, v.Type)
			}
			if !filepath.IsAbs(v.Target) {
				t.Errorf("%s: volume target %q is not absolute", name, v.Target)
			}
		}
	}

	// Orthanc: a pinned orthancteam image with DICOMweb; REST not published,
	// loopback clients only.
	o := c.Services["orthanc"]
	if !regexp.MustCompile(`^orthancteam/orthanc:[0-9][0-9.]*$`).MatchString(o.Image) {
		t.Errorf("orthanc image %q, want orthancteam/orthanc:<pinned version>", o.Image)
	}
	if o.Environment["DICOM_WEB_PLUGIN_ENABLED"] != "true" {
		t.Errorf("orthanc: DICOMweb plugin not enabled")
	}
	if o.Environment["ORTHANC__REMOTE_ACCESS_ALLOWED"] != "false" {
		t.Errorf("orthanc: ORTHANC__REMOTE_ACCESS_ALLOWED %q, want \"false\" (REST for loopback clients only)", o.Environment["ORTHANC__REMOTE_ACCESS_ALLOWED"])
	}
	for _, p := range o.Ports {
		if strings.Contains(p, "8042") {
			t.Errorf("orthanc publishes its REST port: %q", p)
		}
	}

	agentImage := regexp.MustCompile(`^\$\{AGENT_IMAGE:-orthanc-gcp-agent:[A-Za-z0-9_.-]+\}$`)
	var keyVolume string
	for _, name := range []string{"agent", "agent-keygen"} {
		s := c.Services[name]
		if !agentImage.MatchString(s.Image) {
			t.Errorf("%s: image %q, want ${AGENT_IMAGE:-orthanc-gcp-agent:TAG} (make agent-image tags orthanc-gcp-agent:latest)", name, s.Image)
		}
		if s.User != imageUser {
			t.Errorf("%s: user %q, want %q", name, s.User, imageUser)
		}
		if !s.ReadOnly {
			t.Errorf("%s: read_only root filesystem not set", name)
		}
		if !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: cap_drop %v, want [ALL]", name, s.CapDrop)
		}
		if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: security_opt %v lacks no-new-privileges:true", name, s.SecurityOpt)
		}
		if len(s.Entrypoint) > 0 {
			t.Errorf("%s: entrypoint overridden (the image has no shell)", name)
		}
		var key *composeVolume
		for i, v := range s.Volumes {
			if v.Target == keyDir {
				key = &s.Volumes[i]
			}
		}
		if key == nil || key.Type != "volume" || key.ReadOnly {
			t.Errorf("%s: want a writable named volume on %s for the key, got %+v", name, keyDir, s.Volumes)
			continue
		}
		if keyVolume == "" {
			keyVolume = key.Source
		} else if key.Source != keyVolume {
			t.Errorf("%s: key volume %q, agent uses %q", name, key.Source, keyVolume)
		}
	}

	// The agent: in Orthanc's network namespace, config read-only, key on
	// the volume, health from its own status command.
	a := c.Services["agent"]
	if a.NetworkMode != "service:orthanc" {
		t.Errorf("agent: network_mode %q, want service:orthanc (Orthanc stays on loopback)", a.NetworkMode)
	}
	if len(a.Profiles) > 0 {
		t.Errorf("agent: profiles %v: it must start with `docker compose up`", a.Profiles)
	}
	if _, ok := a.DependsOn["orthanc"]; !ok {
		t.Errorf("agent: no depends_on orthanc")
	}
	if !slices.Equal(a.Command, []string{"run"}) {
		t.Errorf("agent: command %v, want [run]", a.Command)
	}
	if a.Environment["AGENT_CONFIG"] != agentConfig {
		t.Errorf("agent: AGENT_CONFIG %q, want %s", a.Environment["AGENT_CONFIG"], agentConfig)
	}
	keyFile := a.Environment["AGENT_BROKER_KEY_FILE"]
	if filepath.Dir(keyFile) != keyDir {
		t.Errorf("agent: AGENT_BROKER_KEY_FILE %q is not on the key volume (%s)", keyFile, keyDir)
	}
	var conf *composeVolume
	for i, v := range a.Volumes {
		if v.Target == agentConfig {
			conf = &a.Volumes[i]
		}
	}
	if conf == nil || conf.Type != "bind" || !conf.ReadOnly {
		t.Errorf("agent: want %s bind-mounted read_only, got %+v", agentConfig, a.Volumes)
	}
	if a.Healthcheck == nil || !slices.Equal(a.Healthcheck.Test, []string{"CMD", agentEntrypoint, "status"}) {
		t.Errorf("agent: healthcheck %+v, want [CMD %s status] (exec form: no shell in the image)", a.Healthcheck, agentEntrypoint)
	}

	// The one-shot keygen: no network, writes the key the agent reads.
	k := c.Services["agent-keygen"]
	if !slices.Equal(k.Profiles, []string{"setup"}) {
		t.Errorf("agent-keygen: profiles %v, want [setup] (never started by `up`)", k.Profiles)
	}
	if k.NetworkMode != "none" {
		t.Errorf("agent-keygen: network_mode %q, want none", k.NetworkMode)
	}
	if k.Restart != "no" {
		t.Errorf("agent-keygen: restart %q, want \"no\"", k.Restart)
	}
	if !slices.Equal(k.Command, []string{"keygen", "--out", keyFile}) {
		t.Errorf("agent-keygen: command %v, want [keygen --out %s]", k.Command, keyFile)
	}
}
