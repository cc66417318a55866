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

// Each record is one Cloud Logging line with every field, and never the
// token itself.
func TestLines(t *testing.T) {
	var buf bytes.Buffer
	l := New(cloudlog.NewHandler(&buf, slog.LevelInfo))
	l.now = func() time.Time { return at }
	if err := l.Issued(t.Context(), records()...); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if strings.Contains(buf.String(), secretToken) {
		t.Fatal("token in an audit line")
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m["event"] != Event || m["message"] != Message || m["severity"] != "INFO" || m[wire.FingerprintKey] != wire.Fingerprint(secretToken+"2") ||
		m["agent"] != "clinic-\"b\"\n" || m["expires_at"] != "2030-01-02T03:04:05Z" || m["cached"] != false || m["time"] != "2030-01-02T03:04:05.000000006Z" ||
		m["forwarded_for"] != strings.ToValidUTF8(logtext.Truncate(records()[1].Forwarded, maxForwarded), "\ufffd") {
		t.Errorf("line %v", m)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrorsReturned(t *testing.T) {
	for name, h := range map[string]slog.Handler{
		"cloudlog":      cloudlog.NewHandler(failing{}, slog.LevelInfo),
		"slog json":     slog.NewJSONHandler(failing{}, nil),
		"derived":       cloudlog.NewHandler(failing{}, slog.LevelInfo).WithAttrs([]slog.Attr{slog.String("k", "v")}),
		"warning level": cloudlog.NewHandler(failing{}, slog.LevelWarn),
	} {
		if err := New(h).Issued(t.Context(), records()...); err == nil {
			t.Errorf("%s: failed write not reported", name)
		}
	}
}

// The audit line is a record, not a diagnostic: a logger whose level is
// above Info (or a derived one) still writes every line.
func TestEveryLoggerWritesLines(t *testing.T) {
	for name, mk := range map[string]func(*bytes.Buffer) slog.Handler{
		"info":    func(b *bytes.Buffer) slog.Handler { return cloudlog.NewHandler(b, slog.LevelInfo) },
		"warning": func(b *bytes.Buffer) slog.Handler { return cloudlog.NewHandler(b, slog.LevelWarn) },
		"error":   func(b *bytes.Buffer) slog.Handler { return cloudlog.NewHandler(b, slog.LevelError) },
		"derived": func(b *bytes.Buffer) slog.Handler {
			return cloudlog.NewHandler(b, slog.LevelInfo).WithAttrs([]slog.Attr{slog.String("k", "v")})
		},
		"slog text": func(b *bytes.Buffer) slog.Handler {
			return slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelError})
		},
	} {
		var buf bytes.Buffer
		if err := New(mk(&buf)).Issued(t.Context(), records()...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := strings.Count(buf.String(), Event); n != 2 {
			t.Errorf("%s: %d audit lines, want 2: %q", name, n, buf.String())
		}
	}
	if err := New(cloudlog.NewHandler(failing{}, slog.LevelInfo)).Issued(t.Context()); err != nil {
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
			for name, mk := range map[string]func(*bytes.Buffer) slog.Handler{
				"cloudlog": func(b *bytes.Buffer) slog.Handler { return cloudlog.NewHandler(b, slog.LevelInfo) },
				"derived": func(b *bytes.Buffer) slog.Handler {
					return cloudlog.NewHandler(b, slog.LevelInfo).WithAttrs(nil)
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
