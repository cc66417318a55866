package fakegcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Setup provisions a Cloud; it is the --setup document of testbed/cmd/fakegcp (see that
// package's doc for an example). File paths in it are relative to the output directory
// (outputs) or to the setup file's directory (inputs).
type Setup struct {
	// ProjectID is the metadata server's project (default "demo-project").
	ProjectID string `json:"ProjectId"`
	// MetadataServiceAccount is the metadata server's identity, i.e. the broker's runtime
	// service account (default "broker@PROJECT.iam.gserviceaccount.com").
	MetadataServiceAccount string
	// TokenLifetime is the lifetime of tokens minted by the token endpoint (default "1h").
	TokenLifetime string
	// ServiceAccounts get a new key each; its JSON goes to Secret and/or File.
	ServiceAccounts []SetupServiceAccount
	// AuthorizedUsers get a refresh token each; its JSON goes to Secret and/or File.
	AuthorizedUsers []SetupAuthorizedUser
	// TokenCreators are roles/iam.serviceAccountTokenCreator bindings.
	TokenCreators []SetupBinding
	// Secrets are other Secret Manager versions to add (for example the broker policy).
	Secrets []SetupSecret
	// Stores are the DICOMweb front's stores.
	Stores []SetupStore
}

// SetupServiceAccount provisions one service-account key.
type SetupServiceAccount struct {
	Email  string
	Secret string // "projects/P/secrets/S": the key JSON becomes a new version there
	File   string // the key JSON is written there (mode 0600)
}

// SetupAuthorizedUser provisions one authorized-user refresh token.
type SetupAuthorizedUser struct {
	Principal string
	Secret    string
	File      string
}

// SetupBinding lets Caller mint tokens for Target through IAM Credentials.
type SetupBinding struct {
	Caller string
	Target string
}

// SetupSecret adds one secret version, from Data (text) or FromFile.
type SetupSecret struct {
	Name     string // "projects/P/secrets/S"
	Data     string
	FromFile string
}

// SetupStore is one DICOM store of the DICOMweb front.
type SetupStore struct {
	Path       string // "projects/P/locations/L/datasets/D/dicomStores/S"
	Upstream   string // e.g. "http://127.0.0.1:8043/dicom-web/"
	Username   string
	Password   string
	Principals []string
}

// State is what a running fake cloud exposes: endpoints and what the setup produced.
// testbed/cmd/fakegcp writes it to --state once everything listens.
type State struct {
	Pid                    int
	ProjectID              string `json:"ProjectId"`
	MetadataServiceAccount string
	TokenURL               string `json:"TokenUrl"`       // http://127.0.0.1:P/token
	TokenServerURL         string `json:"TokenServerUrl"` // http://127.0.0.1:P
	SecretManagerAddr      string // 127.0.0.1:P, plain gRPC
	IAMCredentialsURL      string `json:"IamCredentialsUrl"` // http://127.0.0.1:P
	MetadataHost           string // 127.0.0.1:P, for GCE_METADATA_HOST
	DICOMwebBaseURL        string `json:"DicomWebBaseUrl"` // http://127.0.0.1:P/v1/
	StorageURL             string `json:"StorageUrl"`      // http://127.0.0.1:P, for BROKER_STORAGE_ENDPOINT
	AdminURL               string `json:"AdminUrl,omitempty"`
	ServiceAccounts        []StateServiceAccount
	AuthorizedUsers        []StateAuthorizedUser
	Secrets                []StateSecret
	Stores                 []string
}

// StateServiceAccount is a provisioned service-account key.
type StateServiceAccount struct {
	Email         string
	KeyID         string `json:"KeyId"`
	Secret        string `json:",omitempty"`
	SecretVersion string `json:",omitempty"`
	File          string `json:",omitempty"`
}

// StateAuthorizedUser is a provisioned authorized user.
type StateAuthorizedUser struct {
	Principal     string
	Secret        string `json:",omitempty"`
	SecretVersion string `json:",omitempty"`
	File          string `json:",omitempty"`
}

// StateSecret is a secret version the setup added.
type StateSecret struct {
	Name    string
	Version string
}

// LoadSetup reads a setup document; unknown fields are errors. Relative FromFile paths
// are resolved against the document's directory.
func LoadSetup(path string) (*Setup, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Setup
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("fakegcp: setup %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for i := range s.Secrets {
		if f := s.Secrets[i].FromFile; f != "" && !filepath.IsAbs(f) {
			s.Secrets[i].FromFile = filepath.Join(dir, f)
		}
	}
	s.defaults()
	return &s, s.Validate()
}

func (s *Setup) defaults() {
	if s.ProjectID == "" {
		s.ProjectID = "demo-project"
	}
	if s.MetadataServiceAccount == "" {
		s.MetadataServiceAccount = "broker@" + s.ProjectID + ".iam.gserviceaccount.com"
	}
}

// Validate checks the document without touching any fake.
func (s *Setup) Validate() error {
	var errs []error
	if s.TokenLifetime != "" {
		if d, err := time.ParseDuration(s.TokenLifetime); err != nil || d < time.Second {
			errs = append(errs, fmt.Errorf("TokenLifetime %q: want a Go duration of at least 1s", s.TokenLifetime))
		}
	}
	for i, sa := range s.ServiceAccounts {
		errs = append(errs, checkDelivery(fmt.Sprintf("ServiceAccounts[%d]", i), "Email", sa.Email, sa.Secret, sa.File)...)
	}
	for i, u := range s.AuthorizedUsers {
		errs = append(errs, checkDelivery(fmt.Sprintf("AuthorizedUsers[%d]", i), "Principal", u.Principal, u.Secret, u.File)...)
	}
	for i, b := range s.TokenCreators {
		if b.Caller == "" || b.Target == "" {
			errs = append(errs, fmt.Errorf("TokenCreators[%d]: Caller and Target are required", i))
		}
	}
	for i, sec := range s.Secrets {
		if _, _, ok := parseSecretName(sec.Name); !ok {
			errs = append(errs, fmt.Errorf("Secrets[%d]: Name %q is not projects/P/secrets/S", i, sec.Name))
		}
		if sec.Data != "" && sec.FromFile != "" {
			errs = append(errs, fmt.Errorf("Secrets[%d] (%s): set Data or FromFile, not both", i, sec.Name))
		}
	}
	for i, st := range s.Stores {
		if !ValidStorePath(st.Path) {
			errs = append(errs, fmt.Errorf("Stores[%d]: Path %q is not projects/P/locations/L/datasets/D/dicomStores/S", i, st.Path))
		}
		if st.Upstream == "" {
			errs = append(errs, fmt.Errorf("Stores[%d] (%s): Upstream is required", i, st.Path))
		}
	}
	return errors.Join(errs...)
}

// checkDelivery validates a credential's identity and where it is delivered:
// a Secret Manager secret, a file, or both.
func checkDelivery(where, idField, id, secret, file string) []error {
	var errs []error
	if id == "" {
		errs = append(errs, fmt.Errorf("%s: %s is required", where, idField))
	}
	if secret == "" && file == "" {
		errs = append(errs, fmt.Errorf("%s (%s): set Secret and/or File", where, id))
	}
	if secret != "" {
		if _, _, ok := parseSecretName(secret); !ok {
			errs = append(errs, fmt.Errorf("%s (%s): Secret %q is not projects/P/secrets/S", where, id, secret))
		}
	}
	return errs
}

// Apply provisions c as s says. Output files go to outDir (required when any File is
// relative). It returns the resulting State (endpoints included).
func (c *Cloud) Apply(s *Setup, outDir string) (*State, error) {
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.TokenLifetime != "" {
		d, _ := time.ParseDuration(s.TokenLifetime)
		c.Tokens.SetLifetime(d)
	}
	// ProjectID and MetadataServiceAccount are fixed when the cloud starts (see Run).
	st := c.State()
	for _, sa := range s.ServiceAccounts {
		cred, keyID, err := c.Tokens.NewServiceAccountKey(sa.Email)
		if err != nil {
			return nil, err
		}
		out := StateServiceAccount{Email: sa.Email, KeyID: keyID, Secret: sa.Secret}
		if out.File, out.SecretVersion, err = c.deliver(cred, sa.Secret, sa.File, outDir); err != nil {
			return nil, fmt.Errorf("fakegcp: service account %s: %w", sa.Email, err)
		}
		st.ServiceAccounts = append(st.ServiceAccounts, out)
	}
	for _, u := range s.AuthorizedUsers {
		cred, err := c.Tokens.NewAuthorizedUser(u.Principal)
		if err != nil {
			return nil, err
		}
		out := StateAuthorizedUser{Principal: u.Principal, Secret: u.Secret}
		if out.File, out.SecretVersion, err = c.deliver(cred, u.Secret, u.File, outDir); err != nil {
			return nil, fmt.Errorf("fakegcp: authorized user %s: %w", u.Principal, err)
		}
		st.AuthorizedUsers = append(st.AuthorizedUsers, out)
	}
	for _, b := range s.TokenCreators {
		c.IAM.AllowCaller(b.Caller, b.Target)
	}
	for _, sec := range s.Secrets {
		data := []byte(sec.Data)
		if sec.FromFile != "" {
			var err error
			if data, err = os.ReadFile(sec.FromFile); err != nil {
				return nil, fmt.Errorf("fakegcp: secret %s: %w", sec.Name, err)
			}
		}
		st.Secrets = append(st.Secrets, StateSecret{Name: sec.Name, Version: c.SecretManager.AddVersion(sec.Name, data)})
	}
	for _, store := range s.Stores {
		if err := addStore(c.DICOMweb, store); err != nil {
			return nil, err
		}
	}
	st.Stores = c.DICOMweb.Stores()
	return st, nil
}

func addStore(f *DICOMwebFront, s SetupStore) (err error) {
	// AddStore panics on a bad upstream URL (a programming error in Go callers); here it
	// is user input.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fakegcp: store %s: %v", s.Path, r)
		}
	}()
	if !ValidStorePath(s.Path) {
		return fmt.Errorf("fakegcp: store path %q is not projects/P/locations/L/datasets/D/dicomStores/S", s.Path)
	}
	f.AddStore(s.Path, s.Upstream, s.Username, s.Password, s.Principals...)
	return nil
}

// deliver puts credential JSON into a new secret version and/or a 0600 file.
func (c *Cloud) deliver(cred []byte, secret, file, outDir string) (path, version string, err error) {
	if secret != "" {
		version = c.SecretManager.AddVersion(secret, cred)
	}
	if file != "" {
		path = file
		if !filepath.IsAbs(path) {
			if outDir == "" {
				return "", "", fmt.Errorf("File %q is relative and no output directory is set", file)
			}
			path = filepath.Join(outDir, file)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", "", err
		}
		if err := os.WriteFile(path, cred, 0o600); err != nil {
			return "", "", err
		}
		// WriteFile keeps the mode of an existing file; credentials must stay private.
		if err := os.Chmod(path, 0o600); err != nil {
			return "", "", err
		}
	}
	return path, version, nil
}

// State reports the endpoints of c (the provisioning lists are empty).
func (c *Cloud) State() *State {
	return &State{
		Pid:                    os.Getpid(),
		MetadataServiceAccount: c.Metadata.Email(),
		ProjectID:              c.Metadata.projectID,
		TokenURL:               c.Tokens.TokenURL(),
		TokenServerURL:         c.Tokens.URL(),
		SecretManagerAddr:      c.SecretManager.Addr(),
		IAMCredentialsURL:      c.IAM.URL(),
		MetadataHost:           c.Metadata.Host(),
		DICOMwebBaseURL:        c.DICOMweb.URL() + "/v1/",
		StorageURL:             c.Storage.URL(),
		Stores:                 c.DICOMweb.Stores(),
	}
}
