package cloudlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
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
