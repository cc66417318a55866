package agentkey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPublicKeyRoundTrip(t *testing.T) {
	for range 20 {
		pub, _, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		line := FormatPublicKey(pub)
		if !strings.HasPrefix(line, "ed25519:") || len(line) != len("ed25519:")+44 || !strings.HasSuffix(line, "=") {
			t.Fatalf("line %q is not ed25519: + padded standard base64 of 32 bytes", line)
		}
		got, err := ParsePublicKey(line)
		if err != nil {
			t.Fatalf("ParsePublicKey(%q): %v", line, err)
		}
		if !got.Equal(pub) {
			t.Fatal("round trip changed the key")
		}
	}
}

func TestParsePublicKeyRejects(t *testing.T) {
	pub, _, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	good := FormatPublicKey(pub)
	b64 := strings.TrimPrefix(good, Prefix)
	// Same bytes but a non-zero padding bit in the last character: standard
	// decoders accept it, the canonical form does not.
	last := strings.IndexByte(base64Alphabet, b64[42])
	nonCanonical := b64[:42] + string(base64Alphabet[last|1]) + "="
	if last|1 == last {
		nonCanonical = b64[:42] + string(base64Alphabet[last&^1]) + "="
	}

	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"no prefix", b64},
		{"other prefix", "ed448:" + b64},
		{"upper-case prefix", "ED25519:" + b64},
		{"missing padding", strings.TrimSuffix(good, "=")},
		{"url alphabet", Prefix + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16))},
		{"non-canonical trailing bits", Prefix + nonCanonical},
		{"leading space", " " + good},
		{"space inside", Prefix + b64[:10] + " " + b64[10:]},
		{"31 bytes", Prefix + base64.StdEncoding.EncodeToString(pub[:31])},
		{"33 bytes", Prefix + base64.StdEncoding.EncodeToString(append(bytes.Clone(pub), 0))},
		{"64-byte private key", Prefix + base64.StdEncoding.EncodeToString(make([]byte, 64))},
		{"trailing newline", good + "\n"},
		{"CRLF inside", Prefix + b64[:10] + "\r\n" + b64[10:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "url alphabet" && !strings.ContainsAny(tc.in, "-_") {
				t.Fatalf("test input %q has no URL-alphabet character", tc.in)
			}
			if k, err := ParsePublicKey(tc.in); err == nil {
				t.Fatalf("ParsePublicKey(%q) = %x, want an error", tc.in, k)
			}
		})
	}
	// Sanity: the non-canonical spelling decodes to the same key when not
	// strict, which is exactly why it must be refused.
	raw, err := base64.StdEncoding.DecodeString(nonCanonical)
	if err != nil || !bytes.Equal(raw, pub) {
		t.Fatalf("non-canonical input does not decode to the key (%v)", err)
	}
}

const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func TestPrivateKeyRoundTrip(t *testing.T) {
	_, priv, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	data, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Fatalf("not a PEM PRIVATE KEY block: %.30q", data)
	}
	got, err := ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Fatal("round trip changed the key")
	}
}

func TestParsePrivateKeyRejects(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := Generate()
	edDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"wrong block type", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: edDER})},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("secret-looking-bytes")})},
		{"ECDSA key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePrivateKey(tc.in)
			if err == nil {
				t.Fatal("accepted")
			}
			if len(tc.in) > 0 && strings.Contains(err.Error(), "secret-looking") {
				t.Fatalf("error %q echoes the key file", err)
			}
		})
	}
}

func TestWriteNewAndReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.key")

	// Mode 0600 must not depend on a restrictive umask.
	old := syscall.Umask(0)
	pub, err := WriteNew(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	priv, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("WriteNew returned a public key that does not match the file")
	}

	// Never overwrite: the second call fails and the file is unchanged.
	before, _ := os.ReadFile(path)
	if _, err := WriteNew(path); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second WriteNew: %v, want refusal", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("WriteNew changed an existing key file")
	}
	// Not through a symlink either (O_EXCL does not follow it).
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(filepath.Join(dir, "target-does-not-exist"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteNew(link); err == nil {
		t.Fatal("WriteNew followed a dangling symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "target-does-not-exist")); !os.IsNotExist(err) {
		t.Fatal("WriteNew created the symlink target")
	}
}

func TestReadFileRefusesLooseModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.key")
	if _, err := WriteNew(path); err != nil {
		t.Fatal(err)
	}
	pemText, _ := os.ReadFile(path)
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o700, true},
		{0o610, false},
	}
	for _, tc := range tests {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(path)
		if tc.ok != (err == nil) {
			t.Fatalf("mode %#o: err %v, want ok=%v", tc.mode, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), strings.Split(string(pemText), "\n")[1]) {
			t.Fatalf("mode %#o: error echoes the key", tc.mode)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing.key")); err == nil {
		t.Fatal("missing file accepted")
	}
}
