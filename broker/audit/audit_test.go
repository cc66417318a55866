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
