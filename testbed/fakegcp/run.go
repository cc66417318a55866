package fakegcp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/atomicfile"
)

// Run is testbed/cmd/fakegcp's main logic: parse args, start every fake and the admin API,
// apply --setup, write --state, then serve until ctx ends. ready, if not nil, is called
// with the state once everything listens (after the state file is written).
func Run(ctx context.Context, args []string, stderr io.Writer, ready func(State)) error {
	fs := flag.NewFlagSet("fakegcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a Addrs
	fs.StringVar(&a.Token, "token-addr", "127.0.0.1:0", "OAuth2 token endpoint listen address")
	fs.StringVar(&a.SecretManager, "secretmanager-addr", "127.0.0.1:0", "Secret Manager (plain gRPC) listen address")
	fs.StringVar(&a.IAM, "iam-addr", "127.0.0.1:0", "IAM Credentials (REST) listen address")
	fs.StringVar(&a.Metadata, "metadata-addr", "127.0.0.1:0", "metadata server listen address")
	fs.StringVar(&a.DICOMweb, "dicomweb-addr", "127.0.0.1:0", "Healthcare DICOMweb front listen address")
	fs.StringVar(&a.Storage, "storage-addr", "127.0.0.1:0", "Cloud Storage (JSON API) listen address")
	adminAddr := fs.String("admin-addr", "127.0.0.1:0", "admin API listen address")
	setupPath := fs.String("setup", "", "JSON setup document to provision (see package doc)")
	statePath := fs.String("state", "", "write the state document (endpoints, files, secrets) here once listening")
	outDir := fs.String("out-dir", "", "directory for credential files named by the setup")
	quiet := fs.Bool("quiet", false, "do not log requests")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("fakegcp: unexpected arguments %q", fs.Args())
	}

	setup := &Setup{}
	if *setupPath != "" {
		var err error
		if setup, err = LoadSetup(*setupPath); err != nil {
			return err
		}
	}
	setup.defaults()

	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *quiet {
		log = nil
	}
	cloud, err := StartCloudOn(a, setup.MetadataServiceAccount, setup.ProjectID, log)
	if err != nil {
		return err
	}
	defer cloud.Close()
	state, err := cloud.Apply(setup, *outDir)
	if err != nil {
		return err
	}
	admin := NewAdmin(cloud, state, *outDir)
	if err := admin.Start(*adminAddr); err != nil {
		return fmt.Errorf("fakegcp: start admin API on %q: %w", *adminAddr, err)
	}
	defer admin.Close()

	final := admin.State()
	if *statePath != "" {
		if err := atomicfile.WriteJSON(*statePath, final, 0o600); err != nil {
			return fmt.Errorf("fakegcp: write state: %w", err)
		}
	}
	fmt.Fprintf(stderr, "fakegcp: ready token=%s secretmanager=%s iam=%s metadata=%s dicomweb=%s storage=%s admin=%s\n",
		final.TokenURL, final.SecretManagerAddr, final.IAMCredentialsURL, final.MetadataHost, final.DICOMwebBaseURL, final.StorageURL, final.AdminURL)
	if ready != nil {
		ready(final)
	}
	<-ctx.Done()
	return nil
}
