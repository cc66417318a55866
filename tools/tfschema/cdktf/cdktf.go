// Package cdktf derives a Terraform provider schema from a prebuilt CDKTF
// provider package (for example `npm pack @cdktf/provider-google`).
//
// CDKTF generates its TypeScript from the provider's own schema, and each
// compiled lib/<type>/**.js carries its TypeScript source in an inline source
// map. From that source this package reads, per attribute:
//
//   - the generator's comment "// name - computed: C, optional: O, required: R"
//     (the schema flags, including computed-only attributes);
//   - the declared TypeScript type or getter (string, number, bool, lists,
//     maps), and for nested types whether CDKTF made a single-object
//     OutputReference (MaxItems 1) or a List/Set wrapper;
//   - the "ToHclTerraform" tables, which say whether a field is a block
//     (isBlock) and whether a collection is a list, set or single struct;
//   - the Config interfaces (the .d.ts view), where "?" marks an optional field,
//     cross-checked against the flags above.
//
// Nothing is typed in by hand: any form this package does not recognise is an
// error rather than a guess.
package cdktf

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

// Kind says which schema map a CDKTF class belongs to.
type Kind int

// Kinds of top-level CDKTF classes.
const (
	KindResource Kind = iota
	KindDataSource
	KindProvider
)

// Type is one derived top-level schema.
type Type struct {
	Name   string // Terraform type name, e.g. google_cloud_run_v2_service ("google" for the provider)
	Kind   Kind
	Schema *schema.Schema
}

// PackageInfo is what package.json says about the wrapped provider.
type PackageInfo struct {
	Name            string // npm package name
	Version         string // npm package version
	ProviderSource  string // e.g. registry.terraform.io/hashicorp/google
	ProviderVersion string // e.g. 6.50.0
}

// ReadPackage reads an npm tarball (.tgz) and derives the schema of every
// directory under package/lib whose Terraform type name satisfies want (nil
// means all). It fails on the first type it cannot derive faithfully.
func ReadPackage(r io.Reader, want func(name string) bool) (*schema.Provider, PackageInfo, error) {
	var info PackageInfo
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, info, fmt.Errorf("not a gzip tarball: %w", err)
	}
	sources := map[string]*bytes.Buffer{} // lib dir -> concatenated TypeScript
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, info, err
		}
		name := strings.TrimPrefix(h.Name, "package/")
		switch {
		case name == "package.json":
			var pj struct {
				Name    string `json:"name"`
				Version string `json:"version"`
				Cdktf   struct {
					Provider struct {
						Name    string `json:"name"`
						Version string `json:"version"`
					} `json:"provider"`
				} `json:"cdktf"`
			}
			if err := json.NewDecoder(tr).Decode(&pj); err != nil {
				return nil, info, fmt.Errorf("package.json: %w", err)
			}
			info = PackageInfo{pj.Name, pj.Version, pj.Cdktf.Provider.Name, pj.Cdktf.Provider.Version}
		case strings.HasPrefix(name, "lib/") && strings.HasSuffix(name, ".js") && strings.Count(name, "/") >= 2:
			dir := strings.SplitN(name, "/", 3)[1]
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, info, err
			}
			ts, err := SourceFromJS(b)
			if err != nil {
				return nil, info, fmt.Errorf("%s: %w", name, err)
			}
			if sources[dir] == nil {
				sources[dir] = &bytes.Buffer{}
			}
			sources[dir].WriteString(ts)
			sources[dir].WriteString("\n")
		}
	}
	if info.ProviderVersion == "" {
		return nil, info, errors.New("package.json has no cdktf.provider.version: not a CDKTF provider package")
	}
	p := &schema.Provider{
		Source:      fmt.Sprintf("%s@%s (%s %s)", info.Name, info.Version, info.ProviderSource, info.ProviderVersion),
		Resources:   map[string]*schema.Schema{},
		DataSources: map[string]*schema.Schema{},
	}
	dirs := make([]string, 0, len(sources))
	for d := range sources {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		src := sources[d].String()
		name, ok := TypeName(src)
		if !ok || (want != nil && !want(name)) {
			continue
		}
		t, err := Derive(src)
		if err != nil {
			return nil, info, fmt.Errorf("lib/%s: %w", d, err)
		}
		switch t.Kind {
		case KindProvider:
			p.Provider = t.Schema
		case KindDataSource:
			p.DataSources[t.Name] = t.Schema
		default:
			p.Resources[t.Name] = t.Schema
		}
	}
	return p, info, nil
}

const sourceMapMarker = "//# sourceMappingURL=data:application/json;base64,"

// SourceFromJS returns the TypeScript source embedded in a compiled file's
// inline source map.
func SourceFromJS(js []byte) (string, error) {
	i := bytes.LastIndex(js, []byte(sourceMapMarker))
	if i < 0 {
		return "", errors.New("no inline source map")
	}
	enc := bytes.TrimSpace(js[i+len(sourceMapMarker):])
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := base64.StdEncoding.Decode(raw, enc)
	if err != nil {
		return "", fmt.Errorf("source map: %w", err)
	}
	var sm struct {
		SourcesContent []string `json:"sourcesContent"`
	}
	if err := json.Unmarshal(raw[:n], &sm); err != nil {
		return "", fmt.Errorf("source map: %w", err)
	}
	if len(sm.SourcesContent) != 1 {
		return "", fmt.Errorf("source map has %d sources, want 1", len(sm.SourcesContent))
	}
	return sm.SourcesContent[0], nil
}

// TypeName returns the Terraform type name of the top-level class in src.
func TypeName(src string) (string, bool) {
	m := reTFType.FindStringSubmatch(src)
	if m == nil {
		return "", false
	}
	return m[1], true
}
