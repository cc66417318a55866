// Command tfschema derives a Terraform provider schema from a CDKTF provider
// npm package and installs it, with the schema-only provider binary, in a
// filesystem mirror for offline `terraform validate`:
//
//	tfschema -package provider-google-16.12.1.tgz -provider-version 6.50.0 \
//	  -provider-bin bin/tools/terraform-provider-google -mirror bin/tf-mirror
//
// It prints the CLI configuration path to use as TF_CLI_CONFIG_FILE.
// With -out instead of -mirror it only writes the schema JSON.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/cdktf"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/mirror"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

func main() {
	pkg := flag.String("package", "", "CDKTF provider package (.tgz from npm pack)")
	out := flag.String("out", "", "write the schema JSON here")
	mirrorDir := flag.String("mirror", "", "install the schema-only provider into this filesystem mirror")
	bin := flag.String("provider-bin", "", "schema-only provider binary to install (with -mirror)")
	types := flag.String("types", "", "comma-separated type names to derive (default: all; the provider block is always included)")
	version := flag.String("provider-version", "", "fail unless the package wraps this provider version")
	flag.Parse()
	if *pkg == "" || (*out == "") == (*mirrorDir == "") || (*mirrorDir != "" && *bin == "") {
		fmt.Fprintln(os.Stderr, "usage: tfschema -package PKG.tgz (-out schema.json | -mirror DIR -provider-bin BIN) [-types a,b] [-provider-version V]")
		os.Exit(2)
	}
	if err := run(*pkg, *out, *mirrorDir, *bin, *types, *version); err != nil {
		fmt.Fprintln(os.Stderr, "tfschema:", err)
		os.Exit(1)
	}
}

func run(pkg, out, mirrorDir, bin, types, wantVersion string) error {
	f, err := os.Open(pkg)
	if err != nil {
		return err
	}
	defer f.Close()
	var want func(string) bool
	if types != "" {
		set := map[string]bool{}
		for _, t := range strings.Split(types, ",") {
			set[strings.TrimSpace(t)] = true
		}
		want = func(name string) bool { return set[name] || !strings.Contains(name, "_") }
	}
	p, info, err := cdktf.ReadPackage(f, want)
	if err != nil {
		return err
	}
	if wantVersion != "" && info.ProviderVersion != wantVersion {
		return fmt.Errorf("package wraps %s %s, want %s", info.ProviderSource, info.ProviderVersion, wantVersion)
	}
	if p.Provider == nil {
		return fmt.Errorf("package has no provider class")
	}
	fmt.Fprintf(os.Stderr, "tfschema: %s: %d resources, %d data sources\n", p.Source, len(p.Resources), len(p.DataSources))
	if out != "" {
		return schema.Save(out, p)
	}
	parts := strings.Split(info.ProviderSource, "/")
	if len(parts) != 3 {
		return fmt.Errorf("unexpected provider source %q", info.ProviderSource)
	}
	cfg, err := mirror.Install(mirrorDir, mirror.Provider{
		Hostname: parts[0], Namespace: parts[1], Type: parts[2],
		Version: info.ProviderVersion, Platform: runtime.GOOS + "_" + runtime.GOARCH,
	}, bin, p)
	if err != nil {
		return err
	}
	fmt.Println(cfg)
	return nil
}
