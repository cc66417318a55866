// Package audit writes one structured log line per token the broker hands
// out: who got a token for which store, until when, and a short fingerprint
// that identifies the token without revealing it.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"
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

// Logger writes audit lines.
type Logger struct{ log *slog.Logger }

// New returns an audit logger writing to l.
func New(l *slog.Logger) *Logger { return &Logger{log: l} }

// Fingerprint is the first 16 hex digits of the token's SHA-256: enough to
// match an audit line to a token someone holds, useless to replay.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

// Issued logs one issuance.
func (l *Logger) Issued(ctx context.Context, r Record) {
	attrs := []slog.Attr{
		slog.String("event", "token_issued"),
		slog.String("agent", r.Agent),
		slog.String("account", r.Account),
		slog.String("expires_at", r.ExpiresAt.UTC().Format(time.RFC3339)),
		slog.String("token_sha256", Fingerprint(r.Token)),
		slog.String("client", r.Client),
		slog.Bool("cached", r.Cached),
	}
	if r.Forwarded != "" {
		attrs = append(attrs, slog.String("forwarded_for", truncate(r.Forwarded, 200)))
	}
	l.log.LogAttrs(ctx, slog.LevelInfo, "token issued", attrs...)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
