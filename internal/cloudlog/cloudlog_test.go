package cloudlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestSeverityAndMessage(t *testing.T) {
	tests := []struct {
		level slog.Level
		want  string
	}{
		{slog.LevelDebug, "DEBUG"},
		{slog.LevelInfo, "INFO"},
		{slog.LevelWarn, "WARNING"},
		{slog.LevelError, "ERROR"},
		{slog.LevelError + 4, "CRITICAL"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		New(&buf, slog.LevelDebug).Log(t.Context(), tt.level, "hello", "k", "v")
		var got map[string]any
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%v: not JSON: %s", tt.level, buf.Bytes())
		}
		if got["severity"] != tt.want || got["message"] != "hello" || got["k"] != "v" {
			t.Errorf("%v: got %v", tt.level, got)
		}
		if _, ok := got["level"]; ok {
			t.Errorf("%v: slog's level key leaked: %v", tt.level, got)
		}
	}
}

// Derived loggers (With, WithGroup) still write Cloud Logging lines.
func TestDerivedLoggers(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo).With("k", "v").Warn("w")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || got["severity"] != "WARNING" || got["message"] != "w" || got["k"] != "v" {
		t.Errorf("%s (%v)", buf.Bytes(), err)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// The handler reports its writer's error (broker/audit relies on it) and
// writes each line in one Write call.
func TestHandlerWritesOneLinePerCallAndReportsErrors(t *testing.T) {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "m", 0)
	if err := NewHandler(failing{}, slog.LevelInfo).Handle(t.Context(), r); err == nil {
		t.Fatal("write error not reported")
	}
	var w countingWriter
	r.AddAttrs(slog.String("k", strings.Repeat("x", 10000)))
	if err := NewHandler(&w, slog.LevelInfo).Handle(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 || !bytes.HasSuffix(w.last, []byte("}\n")) {
		t.Fatalf("%d Write calls for one line", w.calls)
	}
}

type countingWriter struct {
	calls int
	last  []byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.calls++
	c.last = append(c.last[:0], p...)
	return len(p), nil
}
