// Package strictjson is the one JSON decoder for documents the broker and
// the agent must not misread: the broker's policy, the token request and
// the agent's configuration. encoding/json alone accepts a duplicated key
// (the last one wins), a key that matches a field only case-insensitively
// ("disabled" fills Disabled) and, with a Decoder, data after the value;
// each of those lets a crafted document mean something other than what a
// reviewer reads.
//
// The decoding is encoding/json/v2's (github.com/go-json-experiment/json,
// its mirror until Go 1.27), whose defaults already refuse duplicate
// names, inexact name matches, invalid UTF-8 and trailing data; Unmarshal
// adds only RejectUnknownMembers. What this package adds is the error: a
// path and a reason, never a value from the document.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// Error is a refused document. Path is where ("Agents.clinic-a.Disabled"),
// empty for the top level.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Unmarshal decodes exactly one JSON value from data into v (a non-nil
// pointer) and refuses: syntax errors, invalid UTF-8, trailing data,
// duplicate keys in any object (also inside free-form values and values
// that parse themselves), keys that are not a field of the target struct,
// keys that match a field only case-insensitively, wrong types, and
// nesting deeper than the decoder's bound (10,000 levels). On error v may
// be partly filled; callers decode into a fresh value.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictjson: Unmarshal needs a non-nil pointer")
	}
	err := json.Unmarshal(data, v, json.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	return describe(data, err)
}

// describe turns the decoder's error into an Error. The decoder's own
// message is not used: a SemanticError may quote the value it refused.
func describe(data []byte, err error) *Error {
	var (
		sem *json.SemanticError
		syn *jsontext.SyntacticError
	)
	switch {
	case errors.As(err, &syn):
		path := pathOf(data, syn.JSONPointer)
		switch {
		case errors.Is(syn.Err, jsontext.ErrDuplicateName):
			return &Error{Path: path, Msg: "duplicate key"}
		case errors.Is(syn.Err, io.ErrUnexpectedEOF):
			return &Error{Path: path, Msg: "unexpected end of JSON"}
		case strings.Contains(syn.Error(), "after top-level value"):
			return &Error{Msg: "unexpected data after the JSON value"}
		case strings.Contains(syn.Error(), "exceeded max depth"):
			return &Error{Path: path, Msg: "nested too deeply"}
		case strings.Contains(syn.Error(), "invalid UTF-8"):
			return &Error{Path: path, Msg: "invalid UTF-8"}
		}
		return &Error{Path: path, Msg: fmt.Sprintf("invalid JSON at byte %d", syn.ByteOffset)}
	case errors.As(err, &sem):
		path := pathOf(data, sem.JSONPointer)
		switch {
		case errors.Is(sem.Err, json.ErrUnknownName):
			if name, ok := caseMatch(sem.GoType, sem.JSONPointer.LastToken()); ok {
				return &Error{Path: path, Msg: fmt.Sprintf("key matches field %q only case-insensitively; write %q", name, name)}
			}
			return &Error{Path: path, Msg: "unknown field"}
		case sem.GoType != nil && sem.JSONKind != 0:
			return &Error{Path: path, Msg: fmt.Sprintf("wrong type: want %s, got JSON %s", sem.GoType, kindName(sem.JSONKind))}
		}
		// A value that parses itself (a time, say) refused it. Its
		// message may quote the value, so it is not passed on.
		return &Error{Path: path, Msg: "invalid value"}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &Error{Msg: "unexpected end of JSON"}
	}
	return &Error{Msg: "invalid JSON"}
}

func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "bool"
	case '"':
		return "string"
	case '0':
		return "number"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "value"
}

// pathOf renders a JSON pointer as errors name places: keys joined by
// ".", indices as "[i]" ("Agents.clinic-a.Accounts[0]"). A pointer does
// not say whether "1" is a key or an index, so the document is read along
// it; where that fails the rest is written as keys. Only errors pay this.
func pathOf(data []byte, p jsontext.Pointer) string {
	var b strings.Builder
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	lost := false
	for tok := range p.Tokens() {
		if !lost && dec.PeekKind() == '[' {
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && enterIndex(dec, i) {
				b.WriteString("[" + tok + "]")
				continue
			}
		}
		lost = lost || dec.PeekKind() != '{' || !enterKey(dec, tok)
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(logtext.Truncate(tok, 80))
	}
	return b.String()
}

// enterIndex moves dec from an array's start to its i-th element.
func enterIndex(dec *jsontext.Decoder, i int) bool {
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	for range i {
		if err := dec.SkipValue(); err != nil {
			return false
		}
	}
	return true
}

// enterKey moves dec from an object's start to the value of its first
// member named key.
func enterKey(dec *jsontext.Decoder, key string) bool {
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return false
		}
		if name.String() == key {
			return true
		}
		if err := dec.SkipValue(); err != nil {
			return false
		}
	}
	return false
}

// caseMatch finds the field of struct type t whose JSON name equals key
// but for letter case.
func caseMatch(t reflect.Type, key string) (string, bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	for _, name := range fieldNames(t) {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

// fieldNames lists the JSON names of t's fields, embedded structs
// flattened, as the decoder matches them.
func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			out = append(out, fieldNames(ft)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}
