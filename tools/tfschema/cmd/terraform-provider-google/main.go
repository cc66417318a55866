// Command terraform-provider-google is a schema-only stand-in for the google
// provider, for offline `terraform validate`. It serves the schema that
// tfschema derived from the CDKTF package, read from schema.json next to the
// executable (or from $TFSCHEMA_FILE). Install it in a filesystem mirror as
// registry.terraform.io/hashicorp/google/VERSION/linux_amd64/.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/provider"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

func main() {
	path := os.Getenv("TFSCHEMA_FILE")
	if path == "" {
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "terraform-provider-google (schema-only):", err)
			os.Exit(1)
		}
		path = filepath.Join(filepath.Dir(exe), "schema.json")
	}
	p, err := schema.Load(path)
	if err == nil {
		var srv *provider.Server
		if srv, err = provider.New(p); err == nil {
			err = tf6server.Serve("registry.terraform.io/hashicorp/google", func() tfprotov6.ProviderServer { return srv })
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-google (schema-only):", err)
		os.Exit(1)
	}
}
