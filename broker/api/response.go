package api

import (
	"net/http"
	"sync"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/jsonenc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// The token answer is the one body on the hot path: it is written by hand,
// byte for byte what json.NewEncoder(w).Encode(resp) writes (TestTokenResponseEncoding),
// without reflection or allocations.

var respPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func writeTokenResponse(w http.ResponseWriter, status int, resp *wire.TokenResponse) {
	bp := respPool.Get().(*[]byte)
	b := appendTokenResponse((*bp)[:0], resp)
	w.Header()["Content-Type"] = hdrJSON
	w.WriteHeader(status)
	_, _ = w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		respPool.Put(bp)
	}
}

// appendTokenResponse appends resp as encoding/json encodes it, with the
// Encoder's trailing newline.
func appendTokenResponse(b []byte, resp *wire.TokenResponse) []byte {
	b = append(b, '{')
	if resp.Error != nil {
		b = append(b, `"error":{"code":`...)
		b = appendJSONString(b, resp.Error.Code)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, resp.Error.Message)
		b = append(b, `},`...)
	}
	b = append(b, `"tokens":`...)
	if resp.Tokens == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range resp.Tokens {
			t := &resp.Tokens[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"store":`...)
			b = appendJSONString(b, t.Store)
			b = append(b, `,"access_token":`...)
			b = appendJSONString(b, t.AccessToken)
			b = append(b, `,"token_type":`...)
			b = appendJSONString(b, t.TokenType)
			b = append(b, `,"expires_at":`...)
			b = appendJSONString(b, t.ExpiresAt)
			b = append(b, `,"dicomweb_url":`...)
			b = appendJSONString(b, t.DicomWebURL)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"errors":`...)
	if resp.Errors == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range resp.Errors {
			e := &resp.Errors[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"store":`...)
			b = appendJSONString(b, e.Store)
			b = append(b, `,"code":`...)
			b = appendJSONString(b, e.Code)
			b = append(b, `,"message":`...)
			b = appendJSONString(b, e.Message)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}', '\n')
}

func appendJSONString(b []byte, s string) []byte {
	return jsonenc.AppendString(b, s, jsonenc.EncodingJSON)
}
