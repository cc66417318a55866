// Package cloudlog makes slog loggers whose JSON lines Cloud Logging parses
// as structured entries: "severity" and "message" instead of slog's "level"
// and "msg", so Cloud Run and Functions show levels and filter on fields.
// slog's JSON handler writes each line in one Write call, under a lock, and
// returns that write's error.
package cloudlog

import (
	"io"
	"log/slog"
)

// NewHandler returns slog's JSON handler writing Cloud Logging entries to w
// at level and above.
func NewHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: replace})
}

// New returns a logger with NewHandler's handler.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewHandler(w, level))
}

func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.LevelKey:
		return slog.String("severity", severity(a.Value.Any().(slog.Level)))
	case slog.MessageKey:
		a.Key = "message"
	}
	return a
}

// severity maps slog levels to Cloud Logging's LogSeverity names.
func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError+4:
		return "CRITICAL"
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}
