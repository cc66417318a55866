package strictjson

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type agent struct {
	PublicKey string
	Accounts  []string
	Disabled  bool `json:",omitempty"`
}

type stamp struct{ time.Time } // parses itself (json.Unmarshaler)

type doc struct {
	Audience string            `json:"Audience"`
	Agents   map[string]agent  `json:"Agents"`
	Labels   map[string]string `json:"labels,omitempty"`
	When     *stamp            `json:"when,omitempty"`
	Extra    any               `json:"extra,omitempty"`
	skipped  int
	Ignored  string `json:"-"`
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string // "" = accepted; else a substring of the error
	}{
		{"valid", `{"Audience":"https://b","Agents":{"a":{"PublicKey":"k","Accounts":["x"]}},"labels":{"k":"v"}}`, ""},
		{"self-parsing field", `{"when":"2026-01-01T00:00:00Z"}`, ""},
		{"free-form field keeps unique keys", `{"extra":{"a":1,"b":[{"c":2}]}}`, ""},
		{"whitespace after the value", "{}\n\t ", ""},
		{"duplicate top-level key", `{"Audience":"a","Audience":"b"}`, `Audience: duplicate key`},
		{"duplicate map key", `{"Agents":{"a":{},"a":{}}}`, `Agents.a: duplicate key`},
		{"duplicate key in a struct in a map", `{"Agents":{"a":{"Disabled":true,"Disabled":false}}}`, `Agents.a.Disabled: duplicate key`},
		{"case-only key", `{"Agents":{"a":{"disabled":true}}}`, `Agents.a.disabled: key matches field "Disabled" only case-insensitively`},
		{"case-only key after the real one", `{"Agents":{"a":{"Disabled":true,"disabled":false}}}`, `Agents.a.disabled: key matches field "Disabled"`},
		{"case-only tagged key", `{"audience":"x"}`, `audience: key matches field "Audience"`},
		{"duplicate inside a free-form field", `{"extra":{"a":1,"a":2}}`, `extra.a: duplicate key`},
		{"unknown field", `{"Audience":"a","Evil":1}`, `Evil: unknown field`},
		{"skipped field is unknown", `{"Ignored":"x"}`, `Ignored: unknown field`},
		{"unexported field is unknown", `{"skipped":1}`, `skipped: unknown field`},
		{"trailing bracket", `{"Audience":"a"}]`, `unexpected data after the JSON value`},
		{"two values", `{} {}`, `unexpected data after the JSON value`},
		{"empty", ``, `unexpected end of JSON`},
		{"truncated", `{"Audience":`, `unexpected end of JSON`},
		{"syntax", `{"Audience" "a"}`, `invalid JSON`},
		{"wrong type", `{"Agents":{"a":{"Accounts":"x"}}}`, `Accounts: wrong type`},
		{"path through an array", `{"extra":[1,{"a":1,"a":2}]}`, `extra[1].a: duplicate key`},
		{"error inside an array of a struct", `{"Agents":{"a":{"Accounts":["x",{"b":1,"b":2}]}}}`, `Agents.a.Accounts[1].b: duplicate key`},
		{"duplicate in a large map", `{"labels":{"k0":"","k1":"","k2":"","k3":"","k4":"","k5":"","k6":"","k7":"","k8":"","k9":"","k3":""}}`, `labels.k3: duplicate key`},
		{"large map of unique keys", `{"labels":{"k0":"","k1":"","k2":"","k3":"","k4":"","k5":"","k6":"","k7":"","k8":"","k9":""}}`, ""},
		{"empty key then a nested one", `{"extra":{"":{"x":1,"x":2}}}`, `extra..x: duplicate key`},
		{"too deep", `{"extra":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, `nested too deeply`},
		{"invalid UTF-8", "{\"Audience\":\"\xff\"}", `Audience: invalid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := Unmarshal([]byte(tc.in), &d)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Unmarshal(%s) = %v, want nil", tc.in, err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Unmarshal(%s) accepted; want error %q", tc.in, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Unmarshal(%s) = %q, want it to contain %q", tc.in, err, tc.wantErr)
			}
			var se *Error
			if err != nil && !errors.As(err, &se) {
				t.Fatalf("error %T is not *strictjson.Error", err)
			}
		})
	}
}

func TestUnmarshalFills(t *testing.T) {
	var d doc
	if err := Unmarshal([]byte(`{"Audience":"https://b","Agents":{"a":{"PublicKey":"k","Disabled":true}}}`), &d); err != nil {
		t.Fatal(err)
	}
	if d.Audience != "https://b" || !d.Agents["a"].Disabled || d.Agents["a"].PublicKey != "k" {
		t.Fatalf("decoded %+v", d)
	}
}

func TestUnmarshalNeedsPointer(t *testing.T) {
	if err := Unmarshal([]byte(`{}`), doc{}); err == nil {
		t.Fatal("a non-pointer was accepted")
	}
}

// A key longer than the log bound is cut in the error, never echoed whole.
func TestLongKeyIsCut(t *testing.T) {
	key := strings.Repeat("k", 5000)
	err := Unmarshal([]byte(`{"`+key+`":1}`), &doc{})
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error %d bytes long: %.100v", len(err.Error()), err)
	}
}

type inner struct {
	A string
	B string
}

type outer struct {
	inner
	B    int    // wins over inner.B
	Next *outer `json:",omitempty"`
}

// Embedded structs are flattened, an outer field winning, and a type that
// refers to itself is walked to any depth.
func TestUnmarshalEmbeddedAndRecursive(t *testing.T) {
	var o outer
	if err := Unmarshal([]byte(`{"A":"a","B":1,"Next":{"Next":{"A":"c"}}}`), &o); err != nil {
		t.Fatal(err)
	}
	if o.A != "a" || o.B != 1 || o.Next.Next.A != "c" {
		t.Fatalf("decoded %+v", o)
	}
	for in, want := range map[string]string{
		`{"Next":{"Next":{"a":"x"}}}`:  `Next.Next.a: key matches field "A" only case-insensitively`,
		`{"Next":{"B":1,"B":2}}`:       `Next.B: duplicate key`,
		`{"B":"x"}`:                    `B: wrong type`,
		`{"Next":{"Next":{"C":true}}}`: `Next.Next.C: unknown field`,
	} {
		if err := Unmarshal([]byte(in), &outer{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Unmarshal(%s) = %v, want %q", in, err, want)
		}
	}
}

// BenchmarkUnmarshal is one agent fragment of the broker's policy, the
// document read 10,000 times at a fleet's first load.
func BenchmarkUnmarshal(b *testing.B) {
	data := []byte(`{"Agents":{"site00042":{"PublicKey":"ed25519:OoGOlJ1ym4Cza9M8ZQsiuKmKRj5ifOENGsI2Ke0GnVQ=","Accounts":["site00042-store0","site00042-store1","site00042-store2"]}}}`)
	b.ReportAllocs()
	for b.Loop() {
		var d doc
		if err := Unmarshal(data, &d); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{`{}`, `{"Audience":"a","Agents":{"x":{"PublicKey":"k","Accounts":["a"]}}}`, `{"a":1,"a":2}`, `[]`, `{"extra":[[[{}]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		if err := Unmarshal(data, &d); err != nil {
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not *strictjson.Error", err)
			}
		}
	})
}

// A struct of more than 64 fields keeps its seen keys apart from the
// bitmask that smaller ones use.
func TestUnmarshalWideStruct(t *testing.T) {
	var fs []reflect.StructField
	for i := range 70 {
		fs = append(fs, reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[int]()})
	}
	typ := reflect.StructOf(fs)
	for in, want := range map[string]string{
		`{"F1":1,"F69":2,"F64":3}`: "",
		`{"F69":1,"F1":1,"F69":2}`: `F69: duplicate key`,
		`{"F3":1,"F3":2}`:          `F3: duplicate key`,
		`{"F68":1,"f68":2}`:        `f68: key matches field "F68" only case-insensitively`,
		`{"F1":1,"F70":2,"F64":3}`: `F70: unknown field`,
	} {
		err := Unmarshal([]byte(in), reflect.New(typ).Interface())
		switch {
		case want == "" && err != nil:
			t.Errorf("Unmarshal(%s) = %v", in, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Unmarshal(%s) = %v, want %q", in, err, want)
		}
	}
}

// A value a type parses itself and refuses is reported by path, without
// the type's message, which may quote the value.
func TestSelfParsingRefusalNamesNoValue(t *testing.T) {
	err := Unmarshal([]byte(`{"when":"secret-looking-value"}`), &doc{})
	if err == nil || !strings.Contains(err.Error(), "when") || strings.Contains(err.Error(), "secret-looking-value") {
		t.Fatalf("err = %v", err)
	}
}
