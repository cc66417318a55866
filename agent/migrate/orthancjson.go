package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxConfigFile bounds each Orthanc configuration file read.
const maxConfigFile = 16 << 20

// object is a decoded JSON object: its members by key, and the keys that
// appear more than once (Orthanc's JSON reader keeps one of them silently).
type object struct {
	members map[string]json.RawMessage
	dups    []string
}

// orthancConfig is an Orthanc configuration as Orthanc reads it: one file,
// or every *.json file of a directory merged at the top level.
type orthancConfig struct {
	path string // absolute, as passed to Orthanc
	dir  string // relative paths in the configuration are resolved against it
	top  object
	// source is the file each top-level key comes from.
	source map[string]string
}

// readOrthancConfig reads path the way Orthanc does: a file, or a directory
// whose *.json files each hold part of the top-level object (a key defined
// in two of them is refused, as Orthanc refuses it). Comments are allowed.
func readOrthancConfig(path string) (*orthancConfig, error) {
	if path == "" {
		return nil, &Error{Field: "--orthanc-config", Msg: "is required"}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{Field: "--orthanc-config", Msg: err.Error()}
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, &Error{Field: "--orthanc-config", Msg: err.Error()}
	}
	c := &orthancConfig{path: abs, source: map[string]string{}}
	c.top.members = map[string]json.RawMessage{}
	var files []string
	if fi.IsDir() {
		c.dir = abs
		entries, err := os.ReadDir(abs)
		if err != nil {
			return nil, &Error{Field: "--orthanc-config", Msg: err.Error()}
		}
		for _, e := range entries {
			if strings.EqualFold(filepath.Ext(e.Name()), ".json") && !e.IsDir() {
				files = append(files, filepath.Join(abs, e.Name()))
			}
		}
		if len(files) == 0 {
			return nil, &Error{Field: "--orthanc-config", Msg: abs + " is a directory without *.json files"}
		}
	} else {
		c.dir = filepath.Dir(abs)
		files = []string{abs}
	}
	slices.Sort(files)
	for _, f := range files {
		obj, err := readJSONFile(f)
		if err != nil {
			return nil, err
		}
		for _, k := range sortedKeys(obj.members) {
			if prev, ok := c.source[k]; ok {
				return nil, &Error{Field: k, Msg: fmt.Sprintf("is defined in both %s and %s (Orthanc refuses this too)", prev, f)}
			}
			c.source[k] = f
			c.top.members[k] = obj.members[k]
		}
		c.top.dups = append(c.top.dups, obj.dups...)
	}
	return c, nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	return slices.Sorted(maps.Keys(m))
}

// readJSONFile reads one configuration file: a JSON object, with Orthanc's
// comments. Errors name the file and the line, never the text there.
func readJSONFile(path string) (object, error) {
	data, err := readRegular(path, maxConfigFile)
	if err != nil {
		return object{}, &Error{Field: "--orthanc-config", Msg: err.Error()}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	clean, err := stripComments(data)
	if err != nil {
		return object{}, &Error{Field: "--orthanc-config", Msg: path + ": " + err.Error()}
	}
	obj, err := decodeObject(clean)
	if err != nil {
		return object{}, &Error{Field: "--orthanc-config", Msg: path + ": " + describeJSONError(clean, err)}
	}
	return obj, nil
}

// readRegular reads a regular file of at most limit bytes. It stats before
// opening so that a FIFO or device is refused rather than blocked on.
func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// stripComments blanks out the // and /* */ comments that Orthanc's JSON
// reader allows, outside strings only ("https://…" keeps its slashes). Each
// comment byte becomes a space and newlines stay, so offsets, lines and
// columns of what remains are those of the file.
func stripComments(data []byte) ([]byte, error) {
	out := bytes.Clone(data)
	inString, escaped := false, false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			continue
		}
		if c != '/' || i+1 >= len(out) {
			continue
		}
		switch out[i+1] {
		case '/':
			for ; i < len(out) && out[i] != '\n'; i++ {
				out[i] = ' '
			}
		case '*':
			end := bytes.Index(out[i+2:], []byte("*/"))
			if end < 0 {
				line, col := position(out, i)
				return nil, fmt.Errorf("line %d, column %d: comment /* is never closed", line, col)
			}
			stop := i + 2 + end + 2
			for j := i; j < stop; j++ {
				if out[j] != '\n' && out[j] != '\r' {
					out[j] = ' '
				}
			}
			i = stop - 1
		}
	}
	return out, nil
}

// decodeObject decodes data, which must be exactly one JSON object, keeping
// each member raw and noting duplicated keys.
func decodeObject(data []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	obj, err := decodeObjectFrom(dec)
	if err != nil {
		return object{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return object{}, errTrailing{offset: dec.InputOffset()}
	}
	return obj, nil
}

type errTrailing struct{ offset int64 }

func (e errTrailing) Error() string { return "unexpected data after the JSON object" }

type errNotObject struct{ offset int64 }

func (e errNotObject) Error() string { return "is not a JSON object" }

func decodeObjectFrom(dec *json.Decoder) (object, error) {
	start := dec.InputOffset()
	tok, err := dec.Token()
	if err != nil {
		return object{}, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return object{}, errNotObject{offset: start}
	}
	obj := object{members: map[string]json.RawMessage{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return object{}, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return object{}, err
		}
		if _, seen := obj.members[key]; seen && !slices.Contains(obj.dups, key) {
			obj.dups = append(obj.dups, key)
		}
		obj.members[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return object{}, err
	}
	return obj, nil
}

// subObject decodes a member that must itself be an object.
func subObject(raw json.RawMessage) (object, bool) {
	obj, err := decodeObject(raw)
	if err != nil {
		return object{}, false
	}
	return obj, true
}

// describeJSONError words a decoding error by position only: the text at
// that place may be a credential, so it is never quoted.
func describeJSONError(data []byte, err error) string {
	var offset int64 = -1
	var syn *json.SyntaxError
	var trailing errTrailing
	var notObj errNotObject
	switch {
	case errors.As(err, &syn):
		offset = syn.Offset
	case errors.As(err, &trailing):
		offset = trailing.offset
	case errors.As(err, &notObj):
		return "is not a JSON object"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "is not valid JSON: it ends early"
	}
	if offset < 0 {
		return "is not valid JSON"
	}
	line, col := position(data, int(offset))
	msg := "is not valid JSON"
	if errors.As(err, &trailing) {
		msg = "has data after the JSON object"
	}
	return fmt.Sprintf("%s (line %d, column %d)", msg, line, col)
}

// position is the 1-based line and column of byte offset i.
func position(data []byte, i int) (line, col int) {
	if i > len(data) {
		i = len(data)
	}
	line = 1 + bytes.Count(data[:i], []byte("\n"))
	col = i - bytes.LastIndexByte(data[:i], '\n')
	return line, col
}
