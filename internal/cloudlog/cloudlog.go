// Package cloudlog makes slog loggers whose JSON lines Cloud Logging parses
// as structured entries: "severity" and "message" instead of slog's "level"
// and "msg", so Cloud Run and Functions show levels and filter on fields.
//
// Every line goes through a Sink, a group-commit writer: a line is written
// before the call that logs it returns, and lines logged at the same time by
// concurrent callers go out together in one write(2).
package cloudlog

import (
	"io"
	"log/slog"
	"time"
)

// New returns a JSON logger writing Cloud Logging entries to w through a
// Sink (w itself when it is one).
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	s, ok := w.(*Sink)
	if !ok {
		s = NewSink(w)
	}
	return slog.New(&handler{
		Handler: slog.NewJSONHandler(s, &slog.HandlerOptions{Level: level, ReplaceAttr: replace}),
		sink:    s,
	})
}

// handler is slog's JSON handler plus the Sink it writes to, so that code
// writing hand-made lines (broker/audit) can find the Sink and its level.
type handler struct {
	slog.Handler
	sink *Sink
}

// WithAttrs and WithGroup return handlers without the Sink marker: a
// derived logger adds fields that a hand-made line would lose.
func (h *handler) WithAttrs(as []slog.Attr) slog.Handler { return h.Handler.WithAttrs(as) }
func (h *handler) WithGroup(name string) slog.Handler    { return h.Handler.WithGroup(name) }

// SinkOf returns the Sink of a logger made by New (not one derived from it
// with With or WithGroup), or nil. A caller that writes its own lines to the
// Sink must make them the way the logger would: see AppendHead.
func SinkOf(l *slog.Logger) *Sink {
	if h, ok := l.Handler().(*handler); ok {
		return h.sink
	}
	return nil
}

// AppendHead appends the opening of a Cloud Logging line as New's loggers
// write it, `{"time":"…","severity":"…","message":"…"`, leaving the object
// open for more fields (each starting with a comma) and the closing "}\n".
func AppendHead(b []byte, t time.Time, level slog.Level, msg string) []byte {
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","severity":"`...)
	b = append(b, severity(level)...)
	b = append(b, `","message":`...)
	return AppendString(b, msg)
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
