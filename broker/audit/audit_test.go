package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

const secretToken = "ya29.a0-secret-access-token"

var at = time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)

func records() []Record {
	return []Record{
		{Agent: "clinic-a", Account: "store-a", ExpiresAt: at.Add(time.Hour), Token: secretToken, Client: "10.0.0.1:5000", Cached: true},
		{Agent: "clinic-\"b\"\n", Account: "<store>&\u2028", ExpiresAt: at.In(time.FixedZone("X", 7200)), Token: secretToken + "2", Client: "[::1]:1",
			Forwarded: "1.2.3.4, \xff\x00" + strings.Repeat("f", 300)},
	}
}

// The lines written straight to a cloudlog Sink are byte for byte what
// slog would write for the same record through cloudlog's handler.
func TestSinkLinesMatchSlog(t *testing.T) {
	var fast, slow bytes.Buffer
	lf := New(cloudlog.New(&fast, slog.LevelInfo))
	if lf.sink == nil {
		t.Fatal("cloudlog logger not recognised")
	}
	// A derived handler has no Sink marker: audit goes through slog.
	ls := New(slog.New(cloudlog.New(&slow, slog.LevelInfo).Handler().WithAttrs(nil)))
	if ls.sink != nil {
		t.Fatal("derived logger used as a sink")
	}
	lf.now = func() time.Time { return at }
	ls.now = lf.now
	if err := lf.Issued(t.Context(), records()...); err != nil {
		t.Fatal(err)
	}
	if err := ls.Issued(t.Context(), records()...); err != nil {
		t.Fatal(err)
	}
	if fast.String() != slow.String() {
		t.Fatalf("hand-made lines differ from slog's:\n%s\n%s", fast.String(), slow.String())
	}
	lines := strings.Split(strings.TrimSuffix(fast.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if strings.Contains(fast.String(), secretToken) {
		t.Fatal("token in an audit line")
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m["event"] != Event || m["message"] != Message || m["severity"] != "INFO" || m[wire.FingerprintKey] != wire.Fingerprint(secretToken+"2") ||
		m["agent"] != "clinic-\"b\"\n" || m["expires_at"] != "2030-01-02T03:04:05Z" || m["cached"] != false ||
		m["forwarded_for"] != strings.ToValidUTF8(logtext.Truncate(records()[1].Forwarded, maxForwarded), "\ufffd") {
		t.Errorf("line %v", m)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrorsReturned(t *testing.T) {
	for name, l := range map[string]*slog.Logger{
		"sink": cloudlog.New(failing{}, slog.LevelInfo),
		"slog": slog.New(slog.NewJSONHandler(failing{}, nil)),
	} {
		if err := New(l).Issued(t.Context(), records()...); err == nil {
			t.Errorf("%s: failed write not reported", name)
		}
	}
}

func TestLevelAndEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := New(cloudlog.New(&buf, slog.LevelWarn)).Issued(t.Context(), records()...); err != nil || buf.Len() != 0 {
		t.Errorf("disabled level: %v %q", err, buf.String())
	}
	if err := New(cloudlog.New(failing{}, slog.LevelInfo)).Issued(t.Context()); err != nil {
		t.Errorf("no records: %v", err)
	}
}

// A long X-Forwarded-For chain is cut from the left, on an entry boundary:
// the rightmost entries (the real client on Cloud Run) survive, the line is
// valid JSON, and control characters cannot forge a line.
func TestForwardedChainKeepsRightmost(t *testing.T) {
	var long []string
	for i := range 100 {
		long = append(long, "10.0.0."+strings.Repeat("9", i%3+1))
	}
	chain := strings.Join(long, ", ") + ", 203.0.113.7, 198.51.100.1"
	forged := strings.Repeat("x", 600) + "\n{\"severity\":\"INFO\",\"event\":\"token_issued\"}\r\n, 198.51.100.2"
	tests := []struct {
		name, forwarded string
		suffix          string
	}{
		{"short", "1.2.3.4, 5.6.7.8", "1.2.3.4, 5.6.7.8"},
		{"long chain", chain, "203.0.113.7, 198.51.100.1"},
		{"forged line", forged, "198.51.100.2"},
		{"one huge entry", strings.Repeat("y", 2000) + "z", "yz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, mk := range map[string]func(*bytes.Buffer) *slog.Logger{
				"sink": func(b *bytes.Buffer) *slog.Logger { return cloudlog.New(b, slog.LevelInfo) },
				"slog": func(b *bytes.Buffer) *slog.Logger {
					return slog.New(cloudlog.New(b, slog.LevelInfo).Handler().WithAttrs(nil))
				},
			} {
				var buf bytes.Buffer
				rec := Record{Agent: "clinic-a", Account: "store-a", ExpiresAt: at, Token: secretToken, Client: "10.1.1.1:443", Forwarded: tt.forwarded}
				if err := New(mk(&buf)).Issued(t.Context(), rec); err != nil {
					t.Fatal(err)
				}
				out := buf.String()
				if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
					t.Fatalf("%s: not one line: %q", name, out)
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(out), &m); err != nil {
					t.Fatalf("%s: not JSON: %v", name, err)
				}
				fwd, _ := m["forwarded_for"].(string)
				if !strings.HasSuffix(fwd, tt.suffix) || len(fwd) > maxForwarded || m["client"] != "10.1.1.1:443" {
					t.Errorf("%s: forwarded_for %q (%d bytes), client %v", name, fwd, len(fwd), m["client"])
				}
				if len(tt.forwarded) > maxForwarded && strings.Contains(tt.forwarded, ",") && !strings.HasPrefix(tt.forwarded, fwd) &&
					!strings.Contains(tt.forwarded, ", "+fwd) && !strings.Contains(tt.forwarded, ","+fwd) {
					t.Errorf("%s: not cut on an entry boundary: %q", name, fwd)
				}
			}
		})
	}
}
