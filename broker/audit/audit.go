// Package audit writes one structured log line per token the broker hands
// out: who got a token for which store, until when, and a short fingerprint
// (wire.Fingerprint, under wire.FingerprintKey) that identifies the token
// without revealing it.
//
// Issued returns only once the lines are written, so a token is never
// handed out without its line, even if the process dies right after
// answering; a failed write is an error the caller must not ignore. The
// lines are records, not diagnostics: no log level turns them off.
package audit

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Record describes one issuance.
type Record struct {
	Agent     string
	Account   string
	ExpiresAt time.Time
	Token     string // hashed, never logged
	Client    string // where the request came from (broker/clientaddr), or "unknown"
	Forwarded string // X-Forwarded-For as received (Cloud Run appends the client)
	Cached    bool
}

// Message and Event are the message and "event" field of every audit line.
const (
	Message = "token issued"
	Event   = "token_issued"
)

// maxForwarded bounds the logged X-Forwarded-For. The chain is cut from
// the left: on Cloud Run the rightmost entry is the real client (appended by
// Google's front end), and the left ones are whatever the client sent.
const maxForwarded = 512

// forwardedTail is the rightmost part of an X-Forwarded-For chain of at
// most maxForwarded bytes, starting on an entry boundary (after a comma)
// when there is one; a single entry longer than that keeps its last bytes.
// Escaping is left to the JSON encoder, so no character can end the line.
func forwardedTail(s string) string {
	if len(s) <= maxForwarded {
		return s
	}
	tail := s[len(s)-maxForwarded:]
	if i := strings.IndexByte(tail, ','); i >= 0 && i+1 < len(tail) {
		tail = tail[i+1:]
	}
	return strings.TrimLeft(tail, " \t")
}

// Logger writes audit lines.
type Logger struct {
	h   slog.Handler
	now func() time.Time
}

// New returns an audit logger writing through h (the broker passes its
// log's handler: internal/cloudlog's, on standard output). h must write
// each record in one call and report the writer's error, as slog's
// JSONHandler does.
func New(h slog.Handler) *Logger {
	return &Logger{h: h, now: time.Now}
}

// Issued writes one line per record and returns once all of them are
// written. A non-nil error means one may not have been: the tokens must
// not be handed out. It calls the handler directly, not through
// slog.Logger, which would skip the lines below the handler's level and
// drop its error.
func (l *Logger) Issued(ctx context.Context, recs ...Record) error {
	for i := range recs {
		rec := slog.NewRecord(l.now(), slog.LevelInfo, Message, 0)
		rec.AddAttrs(attrs(&recs[i])...)
		if err := l.h.Handle(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// attrs are a record's fields as slog attributes.
func attrs(r *Record) []slog.Attr {
	as := []slog.Attr{
		slog.String("event", Event),
		slog.String("agent", r.Agent),
		slog.String("account", r.Account),
		slog.String("expires_at", r.ExpiresAt.UTC().Format(time.RFC3339)),
		slog.String(wire.FingerprintKey, wire.Fingerprint(r.Token)),
		slog.String("client", r.Client),
		slog.Bool("cached", r.Cached),
	}
	if r.Forwarded != "" {
		as = append(as, slog.String("forwarded_for", forwardedTail(r.Forwarded)))
	}
	return as
}
