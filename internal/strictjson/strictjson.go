// Package strictjson is the one JSON decoder for documents the broker and
// the agent must not misread: the broker's policy, the token request and
// the agent's configuration. encoding/json alone accepts a duplicated key
// (the last one wins), a key that matches a field only case-insensitively
// ("disabled" fills Disabled) and, with a Decoder, data after the value;
// each of those lets a crafted document mean something other than what a
// reviewer reads. Unmarshal refuses them all, naming the key.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// MaxDepth bounds nesting, so a hostile document cannot exhaust the stack.
const MaxDepth = 64

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
// pointer) and refuses: syntax errors, trailing data, duplicate keys in any
// object, keys that are not a field of the target struct, keys that match
// a field only case-insensitively, and wrong types. On error v may be
// partly filled; callers decode into a fresh value.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictjson: Unmarshal needs a non-nil pointer")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := walker{dec: dec}
	if err := w.value(rv.Type().Elem(), "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Msg: "unexpected data after the JSON value"}
	}
	d2 := json.NewDecoder(bytes.NewReader(data))
	d2.DisallowUnknownFields()
	if err := d2.Decode(v); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return &Error{Path: typ.Field, Msg: fmt.Sprintf("wrong type: want %s, got JSON %s", typ.Type, typ.Value)}
		}
		return &Error{Msg: "invalid JSON: " + logtext.Clip(strings.TrimPrefix(err.Error(), "json: "))}
	}
	return nil
}

type walker struct{ dec *json.Decoder }

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (w *walker) token(path string) (json.Token, error) {
	t, err := w.dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, &Error{Path: path, Msg: "unexpected end of JSON"}
		}
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, &Error{Path: path, Msg: fmt.Sprintf("invalid JSON at byte %d", syn.Offset)}
		}
		return nil, &Error{Path: path, Msg: "invalid JSON: " + logtext.Clip(strings.TrimPrefix(err.Error(), "json: "))}
	}
	return t, nil
}

// value reads one value whose Go type is t (nil: anything, keys unchecked
// but still unique).
func (w *walker) value(t reflect.Type, path string, depth int) error {
	if depth > MaxDepth {
		return &Error{Path: path, Msg: fmt.Sprintf("nested deeper than %d levels", MaxDepth)}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)) {
		t = nil // the type parses itself; still check the syntax and key uniqueness
	}
	if t != nil && t.Kind() == reflect.Interface {
		t = nil
	}
	tok, err := w.token(path)
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return w.object(t, path, depth)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		_, err := w.token(path) // ']'
		return err
	}
	return nil // a scalar; its type is checked by the second pass
}

func (w *walker) object(t reflect.Type, path string, depth int) error {
	var known map[string]reflect.Type // exact JSON name -> type, for structs
	var elem reflect.Type
	switch {
	case t == nil:
	case t.Kind() == reflect.Struct:
		known = fields(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for w.dec.More() {
		tok, err := w.token(path)
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		kpath := join(path, key)
		if seen[key] {
			return &Error{Path: kpath, Msg: "duplicate key"}
		}
		seen[key] = true
		var next reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			ft, ok := known[key]
			if !ok {
				if name, ci := caseMatch(known, key); ci {
					return &Error{Path: kpath, Msg: fmt.Sprintf("key matches field %q only case-insensitively; write %q", name, name)}
				}
				return &Error{Path: kpath, Msg: "unknown field"}
			}
			next = ft
		} else {
			next = elem
		}
		if err := w.value(next, kpath, depth+1); err != nil {
			return err
		}
	}
	_, err := w.token(path) // '}'
	return err
}

func join(path, key string) string {
	key = logtext.Truncate(key, 80)
	if path == "" {
		return key
	}
	return path + "." + key
}

// fields maps the JSON names of t's fields to their types, embedded
// structs flattened (an outer field wins over an embedded one).
func fields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, ok := jsonName(f)
		if !ok {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fields(ft) {
					if _, taken := out[k]; !taken {
						out[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonName is the field's JSON name ("" = the Go name), false if the field
// is skipped (unexported or `json:"-"`).
func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() && !f.Anonymous {
		return "", false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(tag, ",")
	return name, true
}

func caseMatch(fields map[string]reflect.Type, key string) (string, bool) {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}
