package jsonenc

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

// slogString is what log/slog's JSON handler writes for s as an attribute value.
func slogString(s string) string {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
			return slog.Attr{}
		}
		return a
	}})).Info("", "v", s)
	out := buf.Bytes()
	return string(out[len(`{"v":`) : len(out)-len("}\n")])
}

var samples = []string{"", "plain", `q"b\`, "<a>&", "\b\f\n\r\t\x00\x1f\x7f", "é😀", "\u2028\u2029", "\xff\xfe", "ya29.token-value_1/2+3="}

func TestAppendStringMatchesItsReference(t *testing.T) {
	for _, s := range samples {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s, EncodingJSON); string(got) != string(want) {
			t.Errorf("EncodingJSON %q: %s, want %s", s, got, want)
		}
		if got, want := AppendString(nil, s, Slog), slogString(s); string(got) != want {
			t.Errorf("Slog %q: %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s, EncodingJSON); string(got) != string(want) {
			t.Fatalf("EncodingJSON %q: %s, want %s", s, got, want)
		}
		if got, want := AppendString(nil, s, Slog), slogString(s); string(got) != want {
			t.Fatalf("Slog %q: %s, want %s", s, got, want)
		}
	})
}
