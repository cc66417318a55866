package agentkey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
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
		if !pub.Equal(got) {
			t.Fatal("round trip changed the key")
		}
	}
}

func TestECDSAP256PublicKeyRoundTrip(t *testing.T) {
	for range 20 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		line, err := FormatECDSAP256(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, PrefixECDSAP256) || len(line) != len(PrefixECDSAP256)+88 {
			t.Fatalf("line %q is not ecdsa-p256: + standard base64 of 65 bytes", line)
		}
		got, err := ParsePublicKey(line)
		if err != nil {
			t.Fatalf("ParsePublicKey(%q): %v", line, err)
		}
		if !k.PublicKey.Equal(got) {
			t.Fatal("round trip changed the key")
		}
	}
	if _, err := FormatECDSAP256(nil); err == nil {
		t.Fatal("formatted a nil key")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := FormatECDSAP256(&p384.PublicKey); err == nil {
		t.Fatal("formatted a P-384 key as P-256")
	}
}

func TestParseECDSAP256Rejects(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := k.PublicKey.Bytes()
	offCurve := bytes.Clone(raw)
	offCurve[64] ^= 1
	compressed := append([]byte{0x02 | raw[64]&1}, raw[1:33]...)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	raw384, _ := p384.PublicKey.Bytes()
	enc := func(b []byte) string { return PrefixECDSAP256 + base64.StdEncoding.EncodeToString(b) }
	for name, in := range map[string]string{
		"not on the curve":     enc(offCurve),
		"compressed point":     enc(compressed),
		"P-384 point":          enc(raw384),
		"point at infinity":    enc([]byte{0}),
		"all zero coordinates": enc(append([]byte{4}, make([]byte, 64)...)),
		"ed25519 bytes":        enc(raw[:32]),
		"missing padding":      strings.TrimRight(enc(raw), "="),
		"upper-case prefix":    "ECDSA-P256:" + base64.StdEncoding.EncodeToString(raw),
	} {
		if _, err := ParsePublicKey(in); err == nil {
			t.Errorf("%s: accepted", name)
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
