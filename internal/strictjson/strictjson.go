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
	"slices"
	"strconv"
	"strings"
	"sync"

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
	var pathBuf [8]segment // deep enough for the broker's documents
	w := walker{dec: dec, data: data, path: pathBuf[:0]}
	if err := w.value(info(rv.Type().Elem()), 0); err != nil {
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

// walker checks the token stream against the target type. It keeps where
// it is as a stack of path segments and builds the path string only for
// an error: most documents have none, and a string per key was a good
// part of the walk's cost.
type walker struct {
	dec  *json.Decoder
	data []byte // what dec reads, for peek
	path []segment
}

// segment is one step of a path: an object key, or an array index.
type segment struct {
	key   string
	index int // -1 for a key
}

// pathString is the current path as errors name it: keys joined by ".",
// indices as "[i]" ("Agents.clinic-a.Accounts[0]").
func (w *walker) pathString() string {
	var b strings.Builder
	for _, s := range w.path {
		if s.index >= 0 {
			b.WriteString("[" + strconv.Itoa(s.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(logtext.Truncate(s.key, 80))
	}
	return b.String()
}

func (w *walker) fail(msg string) error { return &Error{Path: w.pathString(), Msg: msg} }

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (w *walker) token() (json.Token, error) {
	t, err := w.dec.Token()
	if err != nil {
		return nil, w.decodeError(err)
	}
	return t, nil
}

func (w *walker) decodeError(err error) error {
	if err == io.EOF {
		return w.fail("unexpected end of JSON")
	}
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return w.fail(fmt.Sprintf("invalid JSON at byte %d", syn.Offset))
	}
	return w.fail("invalid JSON: " + logtext.Clip(strings.TrimPrefix(err.Error(), "json: ")))
}

// peek returns the first byte of the next value in the input: past
// whitespace and the ':' or ',' before it (0 at the end). It only chooses
// how the decoder reads on; the decoder still checks every byte, so a
// wrong separator is refused there, as before.
func (w *walker) peek() byte {
	for _, c := range w.data[w.dec.InputOffset():] {
		switch c {
		case ' ', '\t', '\n', '\r', ':', ',':
			continue
		}
		return c
	}
	return 0
}

// skip reads a value and throws it away: the decoder checks its syntax
// but, unlike Token, builds no Go value for it.
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

// typeInfo is what the walker needs to know of a Go type, worked out once
// per type (reflection per value was a good part of the walk's cost).
type typeInfo struct {
	check  bool // false: anything goes (keys unchecked but still unique)
	kind   reflect.Kind
	elem   *typeInfo            // slices, arrays and maps
	known  map[string]fieldInfo // structs: exact JSON name -> field
	names  []string             // structs: the JSON names in field order
	nField int
}

type fieldInfo struct {
	index int // bit in the seen set
	typ   *typeInfo
}

var (
	anything  = &typeInfo{}
	typeInfos sync.Map // reflect.Type -> *typeInfo
)

// info returns t's typeInfo, built on first use. A type that parses itself
// (json.Unmarshaler, encoding.TextUnmarshaler) or an interface is
// "anything": its syntax and key uniqueness are still checked.
func info(t reflect.Type) *typeInfo {
	if t == nil {
		return anything
	}
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo)
	}
	ti := buildInfo(t, map[reflect.Type]*typeInfo{})
	got, _ := typeInfos.LoadOrStore(t, ti)
	return got.(*typeInfo)
}

// buildInfo builds t's typeInfo; building holds the ones under way, so a
// recursive type refers to itself instead of recursing forever.
func buildInfo(t reflect.Type, building map[reflect.Type]*typeInfo) *typeInfo {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) || t.Kind() == reflect.Interface {
		return anything
	}
	if ti := building[t]; ti != nil {
		return ti
	}
	ti := &typeInfo{check: true, kind: t.Kind()}
	building[t] = ti
	sub := func(t reflect.Type) *typeInfo {
		if cached, ok := typeInfos.Load(t); ok {
			return cached.(*typeInfo)
		}
		return buildInfo(t, building)
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		ti.elem = sub(t.Elem())
	case reflect.Struct:
		fs := fields(t)
		ti.known = make(map[string]fieldInfo, len(fs))
		for i, f := range fs {
			ti.known[f.name] = fieldInfo{index: i, typ: sub(f.typ)}
			ti.names = append(ti.names, f.name)
		}
		ti.nField = len(fs)
	}
	return ti
}

// value reads one value of type ti at the current path.
func (w *walker) value(ti *typeInfo, depth int) error {
	if depth > MaxDepth {
		return w.fail(fmt.Sprintf("nested deeper than %d levels", MaxDepth))
	}
	if c := w.peek(); c != '{' && c != '[' {
		// A scalar (or bad input, which Decode refuses): its type is
		// checked by the second pass.
		if err := w.dec.Decode(new(skip)); err != nil {
			return w.decodeError(err)
		}
		return nil
	}
	tok, err := w.token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return w.object(ti, depth)
	case json.Delim('['):
		elem := anything
		if ti.check && (ti.kind == reflect.Slice || ti.kind == reflect.Array) {
			elem = ti.elem
		}
		for i := 0; w.dec.More(); i++ {
			w.path = append(w.path, segment{index: i})
			if err := w.value(elem, depth+1); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
		}
		_, err := w.token() // ']'
		return err
	}
	return nil // a scalar; its type is checked by the second pass
}

// smallObject is how many keys an object of a map or free-form type may
// have before the walker keeps them in a map rather than a list.
const smallObject = 8

func (w *walker) object(ti *typeInfo, depth int) error {
	isStruct := ti.check && ti.kind == reflect.Struct
	elem := anything
	if ti.check && ti.kind == reflect.Map {
		elem = ti.elem
	}
	var (
		seenBits   uint64 // structs of up to 64 fields: by field index
		seenFields []bool // larger structs
		small      [smallObject]string
		seenList   = small[:0]     // other objects, while small
		seenMap    map[string]bool // other objects, past smallObject keys
	)
	if isStruct && ti.nField > 64 {
		seenFields = make([]bool, ti.nField)
	}
	for w.dec.More() {
		tok, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		w.path = append(w.path, segment{key: key, index: -1})
		next := elem
		if isStruct {
			f, ok := ti.known[key]
			if !ok {
				if name, ci := caseMatch(ti.names, key); ci {
					return w.fail(fmt.Sprintf("key matches field %q only case-insensitively; write %q", name, name))
				}
				return w.fail("unknown field")
			}
			if seenFields != nil {
				if seenFields[f.index] {
					return w.fail("duplicate key")
				}
				seenFields[f.index] = true
			} else {
				if seenBits&(1<<f.index) != 0 {
					return w.fail("duplicate key")
				}
				seenBits |= 1 << f.index
			}
			next = f.typ
		} else {
			switch {
			case seenMap != nil:
				if seenMap[key] {
					return w.fail("duplicate key")
				}
				seenMap[key] = true
			case slices.Contains(seenList, key):
				return w.fail("duplicate key")
			case len(seenList) < smallObject:
				seenList = append(seenList, key)
			default:
				seenMap = make(map[string]bool, 2*smallObject)
				for _, k := range seenList {
					seenMap[k] = true
				}
				seenMap[key] = true
			}
		}
		if err := w.value(next, depth+1); err != nil {
			return err
		}
		w.path = w.path[:len(w.path)-1]
	}
	_, err := w.token() // '}'
	return err
}

// field is one JSON member of a struct type.
type field struct {
	name string
	typ  reflect.Type
}

// fields lists the JSON names of t's fields with their types, embedded
// structs flattened (an outer field wins over an embedded one).
func fields(t reflect.Type) []field {
	var out []field
	taken := map[string]bool{}
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
				for _, sub := range fields(ft) {
					if !taken[sub.name] {
						taken[sub.name] = true
						out = append(out, sub)
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		if taken[name] {
			// Set by an embedded struct earlier: the outer field wins.
			for j := range out {
				if out[j].name == name {
					out[j].typ = f.Type
				}
			}
			continue
		}
		taken[name] = true
		out = append(out, field{name, f.Type})
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

func caseMatch(names []string, key string) (string, bool) {
	for _, name := range names {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}
