// Command orthanc-probe starts the Orthanc build that ORTHANC_BIN /
// ORTHANC_DICOMWEB_PLUGIN select (default: the Debian packages) and prints
// how it answers the REST calls the agent relies on, one "key: value" line
// each, so the behaviour of two generations can be diffed
// (docs/orthanc-versions.md was written from its output).
package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

func main() {
	inst, err := orthancproc.Start(orthancproc.Options{Name: "probe", Users: map[string]string{"probe": "probe-password"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "orthanc-probe:", err)
		os.Exit(1)
	}
	defer inst.Stop()
	p := probe{inst}
	fmt.Printf("versions: %s\n", inst.Versions())
	var sys map[string]any
	p.do("GET /system", http.MethodGet, "/system", nil, &sys)
	fmt.Printf("system.ApiVersion: %v\n", sys["ApiVersion"])

	p.do("PUT server (full)", http.MethodPut, "/dicom-web/servers/probe", map[string]any{
		"Url": "http://127.0.0.1:9/dicom-web/", "HttpHeaders": map[string]string{"Authorization": "Bearer secret-probe"},
		"HasDelete": true, "ChunkedTransfers": true, "Timeout": 30, "OrthancGcpBroker": "managed"}, nil)
	var expand map[string]map[string]any
	p.do("GET servers?expand", http.MethodGet, "/dicom-web/servers?expand", nil, &expand)
	for _, k := range sorted(expand["probe"]) {
		fmt.Printf("servers?expand.probe.%s: %v\n", k, expand["probe"][k])
	}
	p.do("PUT server (minimal)", http.MethodPut, "/dicom-web/servers/minimal", map[string]any{"Url": "http://127.0.0.1:9/"}, nil)
	expand = nil
	p.do("GET servers?expand", http.MethodGet, "/dicom-web/servers?expand", nil, &expand)
	fmt.Printf("servers?expand.minimal keys: %s\n", strings.Join(sorted(expand["minimal"]), ","))
	var ops any
	p.do("GET servers/probe", http.MethodGet, "/dicom-web/servers/probe", nil, &ops)
	fmt.Printf("servers/probe: %v\n", ops)
	p.do("PUT server without Url", http.MethodPut, "/dicom-web/servers/nourl", map[string]any{"HasDelete": true}, nil)
	p.do("PUT server non-string header", http.MethodPut, "/dicom-web/servers/badhdr", map[string]any{"Url": "http://127.0.0.1:9/", "HttpHeaders": map[string]any{"X": 1}}, nil)
	p.do("PUT server name ..%2Fx", http.MethodPut, "/dicom-web/servers/..%2Fx", map[string]any{"Url": "http://127.0.0.1:9/"}, nil)
	p.do("DELETE missing server", http.MethodDelete, "/dicom-web/servers/none", nil, nil)
	p.do("DELETE server", http.MethodDelete, "/dicom-web/servers/probe", nil, nil)

	// A STOW job to a closed port: what a failed job's content carries.
	var created struct{ ID string }
	p.do("POST /tools/create-dicom", http.MethodPost, "/tools/create-dicom", map[string]any{"Tags": map[string]string{"PatientName": "PROBE"}}, &created)
	var job struct{ ID string }
	p.do("POST stow (async)", http.MethodPost, "/dicom-web/servers/minimal/stow", map[string]any{"Resources": []string{created.ID}, "Synchronous": false}, &job)
	var jobs []map[string]any
	for range 150 { // up to 30 s: the job retries nothing, but runs asynchronously
		time.Sleep(200 * time.Millisecond)
		jobs = nil
		p.do("", http.MethodGet, "/jobs?expand", nil, &jobs)
		if len(jobs) > 0 && jobs[0]["State"] != "Running" && jobs[0]["State"] != "Pending" {
			break
		}
	}
	for _, j := range jobs {
		fmt.Printf("job.Type: %v\njob.State: %v\njob.ErrorCode: %v\n", j["Type"], j["State"], j["ErrorCode"])
		if c, ok := j["Content"].(map[string]any); ok {
			fmt.Printf("job.Content keys: %s\n", strings.Join(sorted(c), ","))
			fmt.Printf("job.Content.FunctionErrorCode: %v\n", c["FunctionErrorCode"])
		}
	}
	var plugins []string
	p.do("GET /plugins", http.MethodGet, "/plugins", nil, &plugins)
	sort.Strings(plugins)
	fmt.Printf("plugins: %s\n", strings.Join(plugins, ","))
}

type probe struct{ i *orthancproc.Instance }

func (p probe) do(label, method, path string, body, out any) {
	err := p.i.Do(method, path, body, out)
	if label == "" {
		return
	}
	var he *orthancproc.HTTPError
	switch {
	case err == nil:
		fmt.Printf("%s: 200\n", label)
	case errors.As(err, &he):
		fmt.Printf("%s: %d\n", label, he.Status)
	default:
		fmt.Printf("%s: error %v\n", label, err)
	}
}

func sorted[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
