package migrate

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestWindowsPlan: for an agent that will run on Windows (Options.OS, the
// running system's by default), agent.json points at the agent's folder
// under C:\ProgramData and the steps are PowerShell commands and the
// Windows service of docs/agent.md, with no Linux command left; the
// credential files are deleted with Remove-Item.
func TestWindowsPlan(t *testing.T) {
	t.Parallel()
	cfg := bookConfig(t, "service-account", map[string]string{"dicom-osimis.json": saKeyJSON("orthanc@osimis-test.iam.gserviceaccount.com")})
	out := filepath.Join(t.TempDir(), "it's out")
	r := runOK(t, Options{OrthancConfig: cfg, OutDir: out, OS: "windows",
		AgentCommand: `C:\Program Files\orthanc-gcp-agent\orthanc-gcp-agent.exe`})
	f, _ := resolveAgent(t, r.agent)
	if f.Broker.KeyFile != WindowsAgentKeyFile {
		t.Errorf("Broker.KeyFile = %q, want %q", f.Broker.KeyFile, WindowsAgentKeyFile)
	}
	agent := `& 'C:\Program Files\orthanc-gcp-agent\orthanc-gcp-agent.exe'`
	for _, want := range []string{
		"(only SYSTEM, Administrators and you may open it)",
		"in Git Bash", "BROKER_PROJECT=<the module's project> bash " + shellWord(filepath.ToSlash(filepath.Join(out, LoadSecretsFile))),
		"Copy-Item " + psWord(filepath.Join(out, AgentConfigFile)) + ` C:\ProgramData\orthanc-gcp-agent\agent.json`,
		"4. Enrol: " + agent + ` enrol --config C:\ProgramData\orthanc-gcp-agent\agent.json`,
		"5. Start the agent: " + agent + ` service install --config C:\ProgramData\orthanc-gcp-agent\agent.json`,
		"sc.exe start orthanc-gcp-agent",
		agent + ` status --config C:\ProgramData\orthanc-gcp-agent\agent.json`,
		"Remove-Item " + psWord(filepath.Join(filepath.Dir(cfg), "dicom-osimis.json")),
		`cipher /w:C:\ overwrites the drive's free space`,
	} {
		if !strings.Contains(r.plan, want) {
			t.Errorf("plan lacks %q\n%s", want, r.plan)
		}
	}
	for _, linux := range []string{"sudo", "systemctl", "shred", "/etc/", "/var/lib/", "mode 0700"} {
		if strings.Contains(r.plan, linux) {
			t.Errorf("the Windows plan holds %q\n%s", linux, r.plan)
		}
	}
	noPlanted(t, "plan", r.plan)

	// The default is the running system.
	d := runOK(t, Options{OrthancConfig: cfg, OutDir: filepath.Join(t.TempDir(), "default")})
	if got := strings.Contains(d.plan, "sc.exe start"); got != (runtime.GOOS == "windows") {
		t.Errorf("on %s the plan names the Windows service: %v", runtime.GOOS, got)
	}
}

// TestPSWord: a PowerShell word is left alone when plain, else single-quoted
// with each single quote doubled, so nothing in it is expanded.
func TestPSWord(t *testing.T) {
	for in, want := range map[string]string{
		`C:\ProgramData\orthanc-gcp-agent\agent.json`: `C:\ProgramData\orthanc-gcp-agent\agent.json`,
		`C:\Program Files\a.exe`:                      `'C:\Program Files\a.exe'`,
		`C:\it's\$env:x`:                              `'C:\it''s\$env:x'`,
		"":                                            "''",
		"a;b":                                         "'a;b'",
		"a`b":                                         "'a`b'",
	} {
		if got := psWord(in); got != want {
			t.Errorf("psWord(%q) = %s, want %s", in, got, want)
		}
	}
}
