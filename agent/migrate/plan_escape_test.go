package migrate

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestPlanEscapesControls: the plan prints names, paths and values from the
// Orthanc configuration, a key file and the command line. A control
// character in one (C0, DEL, C1, or invalid UTF-8) is shown escaped, never
// sent raw to the terminal, and other text (é, 日本) is kept as it is.
func TestPlanEscapesControls(t *testing.T) {
	t.Parallel()
	const saCredFile = `, "ServiceAccountFile": "sa.json"`
	tests := []struct {
		name  string
		files map[string]string // relative to the temp dir
		cfg   string            // the --orthanc-config; default orthanc.json
		out   string            // the --out directory's name; default "out"
		want  []string          // in the plan
		// unix: file names Windows does not allow (control characters,
		// invalid UTF-8).
		unix bool
	}{
		{
			name: "RegisteredUsers names",
			files: map[string]string{"sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
				"orthanc.json": `{"RegisteredUsers": {"a\u001b[2J": "p", "b\u0000": "p", "c\u007f": "p", "d\u009b2J": "p", "e\nagent ok": "p", "gcp-agent": "p"},` +
					strings.TrimPrefix(gcp(acct("my-google", saCredFile)), "{")},
			want: []string{`a\x1b[2J`, `b\x00`, `c\x7f`, `d\u009b2J`, `e\nagent ok`},
		},
		{
			name: "client_email of the key file",
			files: map[string]string{"sa.json": saKeyJSON("sa\u009b2J@osimis-test.iam.gserviceaccount.com"),
				"orthanc.json": gcp(acct("my-google", saCredFile))},
			want: []string{`sa\u009b2J@osimis-test`},
		},
		{
			name: "credential file path",
			files: map[string]string{"keys/é日本\u009b.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
				"orthanc.json": gcp(acct("my-google", `, "ServiceAccountFile": "keys/é日本\u009b.json"`))},
			want: []string{`keys/é日本\u009b.json`},
		},
		{
			name: "DicomWeb.Root",
			files: map[string]string{"sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
				"orthanc.json": `{"DicomWeb": {"Root": "/dicom\u009bweb/"},` + strings.TrimPrefix(gcp(acct("my-google", saCredFile)), "{")},
			want: []string{`/dicom\u009bweb/servers/`},
		},
		{
			name: "ignored option",
			files: map[string]string{"sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
				"orthanc.json": gcp(acct("my-google", saCredFile+`, "Bad\u009bKey": 1`))},
			want: []string{`Bad\u009bKey is not an option`},
		},
		{
			name: "configuration and output directories",
			files: map[string]string{"conf\x1b[2J日本/sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
				"conf\x1b[2J日本/orthanc.json": gcp(acct("my-google", saCredFile))},
			cfg:  "conf\x1b[2J日本/orthanc.json",
			out:  "out\x1b]0;title\x07\xff",
			want: []string{`conf\x1b[2J日本/orthanc.json`, `out\x1b]0;title\x07\xff`},
			unix: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.unix && runtime.GOOS == "windows" {
				t.Skip("Windows file names cannot hold control characters")
			}
			dir := t.TempDir()
			writeTree(t, dir, tc.files)
			cfg, out := tc.cfg, tc.out
			if cfg == "" {
				cfg = "orthanc.json"
			}
			if out == "" {
				out = "out"
			}
			r := runOK(t, Options{OrthancConfig: filepath.Join(dir, cfg), OutDir: filepath.Join(t.TempDir(), out)})
			for _, w := range tc.want {
				if !strings.Contains(r.plan, w) {
					t.Errorf("plan lacks %q:\n%s", w, r.plan)
				}
			}
			if i := strings.IndexFunc(r.plan, func(r rune) bool {
				return r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f)
			}); i >= 0 || !utf8.ValidString(r.plan) {
				t.Errorf("raw control character (at byte %d) or invalid UTF-8 in the plan:\n%q", i, r.plan)
			}
		})
	}
}
