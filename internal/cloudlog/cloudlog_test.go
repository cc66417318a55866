package cloudlog

import (
	"bytes"
	"encoding/json"
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

func TestSinkOf(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, slog.LevelInfo)
	if SinkOf(l) == nil {
		t.Fatal("no sink for a cloudlog logger")
	}
	if SinkOf(l.With("k", "v")) != nil || SinkOf(l.WithGroup("g")) != nil {
		t.Error("a derived logger must not offer its sink: hand-made lines would lose its fields")
	}
	if SinkOf(slog.New(slog.NewJSONHandler(&buf, nil))) != nil {
		t.Error("sink for a foreign logger")
	}
	// Derived loggers still write Cloud Logging lines.
	buf.Reset()
	l.With("k", "v").Warn("w")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || got["severity"] != "WARNING" || got["k"] != "v" {
		t.Errorf("%s (%v)", buf.Bytes(), err)
	}
}

// AppendHead and AppendString make exactly the bytes the handler does.
func TestHandMadeLineMatchesHandler(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 600700800, time.FixedZone("X", 3600))
	for _, s := range []string{"", "plain", `q"uo\te`, "<script>&amp;", "tab\tnl\ncr\r\b\f\x00\x1f\x7f", "é ü 日本", "\u2028\u2029", "bad\xffutf8\xc3", strings.Repeat("x", 300)} {
		for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelError + 4} {
			var buf bytes.Buffer
			h := New(&buf, slog.LevelDebug).Handler()
			r := slog.NewRecord(at, level, s, 0)
			r.AddAttrs(slog.String("k", s))
			if err := h.Handle(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			b := AppendHead(nil, at, level, s)
			b = append(b, `,"k":`...)
			b = AppendString(b, s)
			b = append(b, "}\n"...)
			if string(b) != buf.String() {
				t.Errorf("%q:\n got %s\nwant %s", s, b, buf.Bytes())
			}
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "<>&", "\u2028", "\xff", "\"\\", "\x00\b\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
				return slog.Attr{}
			}
			return a
		}})).Info("", "k", s)
		want := strings.TrimSuffix(strings.TrimPrefix(buf.String(), `{"k":`), "}\n")
		if got := AppendString(nil, s); string(got) != want {
			t.Fatalf("%q: got %s want %s", s, got, want)
		}
	})
}
