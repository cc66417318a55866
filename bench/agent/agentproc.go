package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/proc"
)

// agentProc is the agent binary running as its own process: the figures
// about "the process" (RSS, CPU, restart recovery) come from it, not from
// an in-process copy.
type agentProc struct {
	proc    *proc.Process
	listen  string
	logPath string
	http    *http.Client
	started time.Time
}

// startAgent runs `bin run --config cfg` with a clean environment (Go
// runtime defaults: no GOGC, GOMEMLIMIT or GOMAXPROCS from the caller, and
// no AGENT_* override) plus extra (KEY=VALUE), logging to logPath.
func startAgent(bin, cfg, listen, logPath, home string, extra []string) (*agentProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AGENT_LOG_LEVEL=info"}, extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p := &agentProc{listen: listen, logPath: logPath,
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}}
	p.started = time.Now()
	if p.proc, err = proc.Start(cmd); err != nil {
		return nil, err
	}
	return p, nil
}

// pid is the agent's process id.
func (p *agentProc) pid() int { return p.proc.Pid() }

// exited reports whether the process has ended.
func (p *agentProc) exited() bool { return p.proc.Exited() }

// stop sends SIGTERM (the agent exits cleanly, leaving its entries) and
// SIGKILL if it has not exited within 10 s; either is an error for a
// figure that needs a clean stop.
func (p *agentProc) stop() error {
	if p.exited() {
		return fmt.Errorf("agent had already exited: %v", p.proc.Err())
	}
	if err := p.proc.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		return fmt.Errorf("agent ignored SIGTERM for 10 s: %w", err)
	}
	return nil
}

// healthy asks GET /healthz; it is true only on 200 with "healthy": true.
func (p *agentProc) healthy(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.listen+"/healthz", nil)
	if err != nil {
		return false, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var st struct {
		Healthy bool `json:"healthy"`
		Stores  []struct {
			State string `json:"state"`
		} `json:"stores"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return false, fmt.Errorf("healthz: %w", err)
	}
	return resp.StatusCode == http.StatusOK && st.Healthy, nil
}

// waitHealthy polls /healthz every 10 ms until it is healthy; it returns
// how long after exec that was.
func (p *agentProc) waitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return 0, fmt.Errorf("agent exited: %v (log %s)", p.proc.Err(), p.logPath)
		}
		ok, err := p.healthy(ctx)
		if ok {
			return time.Since(p.started), nil
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("agent not healthy after %s (last error: %v; log %s)", timeout, last, p.logPath)
}

// metrics scrapes GET /metrics and returns the samples without labels
// (name -> value); labelled samples are left out.
func (p *agentProc) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.listen+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, 4<<20))
}

// parseMetrics reads unlabelled samples of the Prometheus text format.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		out[f[0]] = v
	}
	return out, sc.Err()
}
