// Package audit writes one structured log line per token the broker hands
// out: who got a token for which store, until when, and a short fingerprint
// (wire.Fingerprint, under wire.FingerprintKey) that identifies the token
// without revealing it.
//
// Issued returns only once the lines are written, so a token is never
// handed out without its line, even if the process dies right after
// answering; a failed write is an error the caller must not ignore.
package audit

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Record describes one issuance.
type Record struct {
	Agent     string
	Account   string
	ExpiresAt time.Time
	Token     string // hashed, never logged
	Client    string // remote address
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
	log *slog.Logger
	// sink is set when log is a cloudlog logger: lines are then made here,
	// exactly as its handler would make them, and committed to its Sink
	// together with concurrent requests' lines.
	sink *cloudlog.Sink
	now  func() time.Time
}

// New returns an audit logger writing to l.
func New(l *slog.Logger) *Logger {
	return &Logger{log: l, sink: cloudlog.SinkOf(l), now: time.Now}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Issued writes one line per record and returns once all of them are
// written, in one write. A non-nil error means they may not have been: the
// tokens must not be handed out.
func (l *Logger) Issued(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 || !l.log.Enabled(ctx, slog.LevelInfo) {
		return nil
	}
	if l.sink == nil {
		return l.issuedSlog(ctx, recs)
	}
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	t := l.now()
	for i := range recs {
		b = appendLine(b, t, &recs[i])
	}
	err := l.sink.Commit(b)
	if cap(b) <= 64<<10 {
		*bp = b
		bufPool.Put(bp)
	}
	return err
}

// appendLine appends r's line as cloudlog's handler would write the
// attributes of issuedSlog.
func appendLine(b []byte, t time.Time, r *Record) []byte {
	b = cloudlog.AppendHead(b, t, slog.LevelInfo, Message)
	b = append(b, `,"event":"`+Event+`","agent":`...)
	b = cloudlog.AppendString(b, r.Agent)
	b = append(b, `,"account":`...)
	b = cloudlog.AppendString(b, r.Account)
	b = append(b, `,"expires_at":"`...)
	b = r.ExpiresAt.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `","`+wire.FingerprintKey+`":"`...)
	b = append(b, wire.Fingerprint(r.Token)...) // hex digits
	b = append(b, `","client":`...)
	b = cloudlog.AppendString(b, r.Client)
	if r.Cached {
		b = append(b, `,"cached":true`...)
	} else {
		b = append(b, `,"cached":false`...)
	}
	if r.Forwarded != "" {
		b = append(b, `,"forwarded_for":`...)
		b = cloudlog.AppendString(b, forwardedTail(r.Forwarded))
	}
	return append(b, '}', '\n')
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

// issuedSlog writes through any other slog handler, one record each, and
// returns the handler's error (slog.Logger's methods drop it).
func (l *Logger) issuedSlog(ctx context.Context, recs []Record) error {
	h := l.log.Handler()
	for i := range recs {
		rec := slog.NewRecord(l.now(), slog.LevelInfo, Message, 0)
		rec.AddAttrs(attrs(&recs[i])...)
		if err := h.Handle(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}
