package cdktf

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func loadWidget(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/widget.ts")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDeriveWidget(t *testing.T) {
	typ, err := Derive(loadWidget(t))
	if err != nil {
		t.Fatal(err)
	}
	if typ.Name != "google_widget" || typ.Kind != KindResource {
		t.Fatalf("got %s kind %d", typ.Name, typ.Kind)
	}
	b := typ.Schema.Block
	attrs := []struct {
		name string
		want string
	}{
		{"name", `{"type":"string","required":true}`},
		{"labels", `{"type":["map","string"],"optional":true}`},
		{"effective_labels", `{"type":["map","string"],"computed":true}`},
		{"tags", `{"type":["set","string"],"optional":true}`},
		{"enabled", `{"type":"bool","optional":true,"computed":true}`},
		{"uri", `{"type":"string","computed":true}`},
		{"status", `{"type":["list",["object",{"code":"number","zones":["set","string"]}]],"computed":true}`},
	}
	for _, tc := range attrs {
		t.Run("attribute/"+tc.name, func(t *testing.T) {
			a, ok := b.Attributes[tc.name]
			if !ok {
				t.Fatalf("missing; have %v", b.Attributes)
			}
			if got := jsonOf(t, a); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if len(b.Attributes) != len(attrs) {
		t.Errorf("%d attributes, want %d: %s", len(b.Attributes), len(attrs), jsonOf(t, b.Attributes))
	}
	blocks := []struct {
		name string
		want string
	}{
		// A required OutputReference block: list, exactly one.
		{"build", `{"nesting_mode":"list","block":{"attributes":{"image":{"type":"string","required":true}}},"min_items":1,"max_items":1}`},
		// A List wrapping a set, optional: unbounded set.
		{"port", `{"nesting_mode":"set","block":{"attributes":{"number":{"type":"number","optional":true,"computed":true}}}}`},
	}
	for _, tc := range blocks {
		t.Run("block/"+tc.name, func(t *testing.T) {
			nb, ok := b.BlockTypes[tc.name]
			if !ok {
				t.Fatalf("missing")
			}
			if got := jsonOf(t, nb); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if len(b.BlockTypes) != len(blocks) {
		t.Errorf("%d blocks, want %d", len(b.BlockTypes), len(blocks))
	}
}

// Anything the derivation cannot read faithfully must be an error, never a guess.
func TestDeriveRejects(t *testing.T) {
	cases := []struct {
		name, old, new, wantErr string
	}{
		{"interface disagrees with flags", "readonly name: string;", "readonly name?: string;", "interface says optional=true but flags say required=true"},
		{"unknown TypeScript type", "private _name?: string; ", "private _name?: bigint; ", `unrecognised TypeScript type "bigint"`},
		{"unknown getter", "return this.getStringAttribute('uri');", "return this.getDateAttribute('uri');", "unrecognised getter"},
		{"getter for another attribute", "return this.getStringAttribute('uri');", "return this.getStringAttribute('url');", "unrecognised getter"},
		{"block/list mismatch", `type: "set",
        storageClassType: "WidgetPortList"`, `type: "list",
        storageClassType: "WidgetPortList"`, "does not match HCL type"},
		{"configurable field missing from HCL table", `      enabled: {
        value: cdktf.booleanToHclTerraform(this._enabled),
        isBlock: false,
        type: "simple",
        storageClassType: "boolean",
      },
`, "", "configurable=true but in HCL table=false"},
		{"no resource class", `public static readonly tfResourceType = "google_widget";`, "", "no class with a tfResourceType"},
	}
	src := loadWidget(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("fixture lacks %q", tc.old)
			}
			_, err := Derive(strings.Replace(src, tc.old, tc.new, 1))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

const providerTS = `import * as cdktf from 'cdktf';
export interface GoogleProviderConfig {
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs#project GoogleProvider#project}
  */
  readonly project?: string;
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs#alias GoogleProvider#alias}
  */
  readonly alias?: string;
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs#batching GoogleProvider#batching}
  */
  readonly batching?: GoogleProviderBatching[] | cdktf.IResolvable;
}
export interface GoogleProviderBatching {
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs#send_after GoogleProvider#send_after}
  */
  readonly sendAfter?: string;
}
export function googleProviderBatchingToHclTerraform(struct?: GoogleProviderBatching | cdktf.IResolvable): any {
  const attrs = {
    send_after: {
      value: cdktf.stringToHclTerraform(struct!.sendAfter),
      isBlock: false,
      type: "simple",
      storageClassType: "string",
    },
  };
}
export class GoogleProvider extends cdktf.TerraformProvider {
  public static readonly tfResourceType = "google";
  // project - computed: false, optional: true, required: false
  private _project?: string; 
  // alias - computed: false, optional: true, required: false
  private _alias?: string; 
  // batching - computed: false, optional: true, required: false
  private _batching?: GoogleProviderBatching[] | cdktf.IResolvable; 
  protected synthesizeHclAttributes(): { [name: string]: any } {
    const attrs = {
      project: {
        value: cdktf.stringToHclTerraform(this._project),
        isBlock: false,
        type: "simple",
        storageClassType: "string",
      },
      alias: {
        value: cdktf.stringToHclTerraform(this._alias),
        isBlock: false,
        type: "simple",
        storageClassType: "string",
      },
      batching: {
        value: cdktf.listMapperHcl(googleProviderBatchingToHclTerraform, true)(this._batching),
        isBlock: true,
        type: "list",
        storageClassType: "GoogleProviderBatchingList",
      },
    };
  }
}
`

func TestDeriveProvider(t *testing.T) {
	typ, err := Derive(providerTS)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"attributes":{"project":{"type":"string","optional":true}},"block_types":{"batching":{"nesting_mode":"list","block":{"attributes":{"send_after":{"type":"string","optional":true}}}}}}`
	if typ.Kind != KindProvider || jsonOf(t, typ.Schema.Block) != want {
		t.Fatalf("kind %d, block %s\nwant %s", typ.Kind, jsonOf(t, typ.Schema.Block), want)
	}
}

// ReadPackage reads sources out of the compiled files' inline source maps.
func TestReadPackage(t *testing.T) {
	js := func(ts string) []byte {
		sm, _ := json.Marshal(map[string]any{"version": 3, "sources": []string{"index.ts"}, "sourcesContent": []string{ts}})
		return []byte("\"use strict\";\n" + sourceMapMarker + base64.StdEncoding.EncodeToString(sm) + "\n")
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	add("package/package.json", []byte(`{"name":"@cdktf/provider-google","version":"16.12.1","cdktf":{"provider":{"name":"registry.terraform.io/hashicorp/google","version":"6.50.0"}}}`))
	add("package/lib/widget/index.js", js(loadWidget(t)))
	add("package/lib/provider/index.js", js(providerTS))
	tw.Close()
	gz.Close()

	p, info, err := ReadPackage(bytes.NewReader(buf.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.ProviderVersion != "6.50.0" || info.ProviderSource != "registry.terraform.io/hashicorp/google" {
		t.Errorf("info %+v", info)
	}
	if p.Provider == nil || p.Resources["google_widget"] == nil || len(p.Resources) != 1 || len(p.DataSources) != 0 {
		t.Fatalf("got %s", jsonOf(t, p))
	}
	// The served form must convert to protocol types without error.
	for name, s := range p.Resources {
		if _, err := s.Proto(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	p, _, err = ReadPackage(bytes.NewReader(buf.Bytes()), func(name string) bool { return name == "google" })
	if err != nil || len(p.Resources) != 0 || p.Provider == nil {
		t.Fatalf("filtered: %v %s", err, jsonOf(t, p))
	}
}
