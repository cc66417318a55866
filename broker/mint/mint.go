// Package mint turns a policy account into a fresh Google access token: a
// service-account key (JWT-bearer grant), an authorized-user refresh token,
// or keyless impersonation through IAM Credentials. It does no caching; that
// is broker/tokencache's job.
package mint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	gax "github.com/googleapis/gax-go/v2"
	"github.com/googleapis/gax-go/v2/apierror"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/secretref"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// DefaultTokenURI is Google's OAuth2 token endpoint, used for inline
// authorized-user credentials (which have no token_uri of their own) and
// for credential documents that name none.
const DefaultTokenURI = "https://oauth2.googleapis.com/token"

// Secrets reads credential documents (see broker/secretref).
type Secrets interface {
	Get(ctx context.Context, ref string) ([]byte, error)
	Invalidate(ref string)
}

// IAMCredentials is the part of the IAM Credentials client used for
// keyless accounts.
type IAMCredentials interface {
	GenerateAccessToken(ctx context.Context, req *credentialspb.GenerateAccessTokenRequest, opts ...gax.CallOption) (*credentialspb.GenerateAccessTokenResponse, error)
}

// Error codes, matching the broker API's.
const (
	CodeUpstream    = "upstream"    // Google refused or failed: 502
	CodeUnavailable = "unavailable" // a dependency is temporarily down: 503
)

// Error is a mint failure. It has two faces, so the broker API can tell the
// agent what went wrong without telling it where the broker keeps its
// credentials:
//
//   - Code and Error() are for the agent (the API sends them as the item's
//     "code" and "message"): a generic message with the error word, such as
//     "token endpoint answered 400 invalid_grant" or "credential secret: not
//     found". It never names a secret reference, a file, a project, a
//     service-account email or a token endpoint host.
//   - Detail() is for the broker's own log (the API logs it with the agent
//     and account): the same failure with where it happened — the secret
//     reference or file, the service-account email, the token_uri host, the
//     upstream status. It is not for agents.
//
// Neither ever carries a token, private key, refresh token, client secret or
// an upstream response body.
type Error struct {
	Code string
	// InvalidGrant is true when Google refused the credential itself.
	InvalidGrant bool

	msg    string   // agent-safe
	detail string   // for the broker's log; "" means the same as msg
	where  []string // for the broker's log: secret, service account, token_uri host
}

// Error is the agent-safe message.
func (e *Error) Error() string { return e.msg }

// Detail is the message for the broker's log: the failure and where it
// happened (secret reference or file, service account, token_uri host).
// Never send it to an agent.
func (e *Error) Detail() string {
	d := e.detail
	if d == "" {
		d = e.msg
	}
	if len(e.where) > 0 {
		d += " (" + strings.Join(e.where, "; ") + ")"
	}
	return d
}

// at adds where the failure happened, to the log detail only.
func (e *Error) at(where string) *Error {
	if where != "" {
		e.where = append(e.where, where)
	}
	return e
}

// annotate adds where to err's detail if it is an *Error.
func annotate(err error, where string) error {
	var me *Error
	if errors.As(err, &me) {
		me.at(where)
	}
	return err
}

// Minter mints tokens. Its zero value is not usable; set Secrets.
type Minter struct {
	Secrets Secrets
	// IAM serves keyless accounts; nil makes them fail with a clear error.
	IAM IAMCredentials
	// HTTPClient calls token endpoints (default: 30 s timeout).
	HTTPClient *http.Client
	// AuthorizedUserTokenURI overrides DefaultTokenURI for inline
	// authorized-user credentials (tests and the demo).
	AuthorizedUserTokenURI string
	// Now is the clock expiry times are expressed in (time.Now if nil).
	Now func() time.Time
}

func (m *Minter) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Mint returns a new token for a. On invalid_grant or 401 from Google it
// re-reads the secret and, if it changed (a rotated key), tries once more.
// A credential whose token_uri is not Google's (or loopback, for the fakes)
// fails before any request is sent. Errors are *Error.
func (m *Minter) Mint(ctx context.Context, a *policy.Account) (*oauth2.Token, error) {
	switch a.Kind() {
	case policy.Impersonation:
		return m.impersonate(ctx, a)
	case policy.AuthorizedUser:
		if a.AuthorizedUserSecret == "" {
			tok, err := m.fromJSON(ctx, a, m.inlineAuthorizedUser(a), google.AuthorizedUser)
			return tok, annotate(err, "inline AuthorizedUser* credential")
		}
		return m.fromSecret(ctx, a, google.AuthorizedUser)
	case policy.ServiceAccountKey:
		return m.fromSecret(ctx, a, google.ServiceAccount)
	}
	return nil, &Error{Code: CodeUpstream, msg: "account has no credential"}
}

func (m *Minter) fromSecret(ctx context.Context, a *policy.Account, typ google.CredentialsType) (*oauth2.Token, error) {
	tok, err := m.fromSecretOnce(ctx, a, typ)
	return tok, annotate(err, "secret "+a.SecretRef())
}

func (m *Minter) fromSecretOnce(ctx context.Context, a *policy.Account, typ google.CredentialsType) (*oauth2.Token, error) {
	ref := a.SecretRef()
	data, err := m.Secrets.Get(ctx, ref)
	if err != nil {
		return nil, secretError(err)
	}
	tok, err := m.fromJSON(ctx, a, data, typ)
	var me *Error
	if !errors.As(err, &me) || !me.InvalidGrant {
		return tok, err
	}
	m.Secrets.Invalidate(ref)
	fresh, ferr := m.Secrets.Get(ctx, ref)
	if ferr != nil {
		return nil, secretError(ferr)
	}
	if bytes.Equal(fresh, data) {
		return nil, err // same credential: asking again would only be refused again
	}
	return m.fromJSON(ctx, a, fresh, typ)
}

func (m *Minter) fromJSON(ctx context.Context, a *policy.Account, data []byte, typ google.CredentialsType) (*oauth2.Token, error) {
	data, err := checkType(data, typ)
	if err != nil {
		return nil, err
	}
	data, where, err := credentialDocument(data, typ)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.httpClient())
	creds, err := google.CredentialsFromJSONWithType(ctx, data, typ, a.ScopeList()...)
	if err != nil {
		return nil, (&Error{Code: CodeUpstream, msg: fmt.Sprintf("%s credential is malformed", typ)}).at(where)
	}
	start := m.now()
	tok, err := creds.TokenSource.Token()
	if err != nil {
		return nil, annotate(tokenError(err), where)
	}
	// x/oauth2 stamps Expiry from the wall clock when the answer arrives;
	// restate it on our clock from the moment we asked, which also errs on
	// the short side by the round trip.
	tok.Expiry = start.Add(time.Until(tok.Expiry))
	return tok, nil
}

// credentialFile is every field of a service_account or authorized_user
// document that minting uses, and nothing else.
type credentialFile struct {
	Type string `json:"type"`

	ClientEmail  string `json:"client_email,omitempty"`
	PrivateKeyID string `json:"private_key_id,omitempty"`
	PrivateKey   string `json:"private_key,omitempty"`

	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`

	TokenURI string `json:"token_uri"`
}

// credentialDocument checks where the credential would send its grant and
// rewrites it to exactly the fields minting uses, so Google's library sees
// the document that was checked: no second token_uri spelled in another
// case or repeated (encoding/json takes the last, case-folded), no "web" or
// "installed" client section (which the library would try first), no
// "audience". An empty token_uri becomes Google's explicitly. where names
// the service account and token endpoint host, for Error.Detail.
func credentialDocument(data []byte, typ google.CredentialsType) (out []byte, where string, err error) {
	var f credentialFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, "", &Error{Code: CodeUpstream, msg: fmt.Sprintf("%s credential is malformed", typ)}
	}
	f.Type = string(typ)
	var at []string
	if typ == google.ServiceAccount && f.ClientEmail != "" {
		at = append(at, "service account "+logtext.Truncate(logtext.Clip(f.ClientEmail), 120))
	}
	if f.TokenURI == "" {
		f.TokenURI = DefaultTokenURI
	}
	u, err := url.Parse(f.TokenURI)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil {
		at = append(at, "token_uri is not an absolute URL without user info")
		return nil, "", (&Error{Code: CodeUpstream, msg: tokenURIRefused}).at(strings.Join(at, ", "))
	}
	at = append(at, "token_uri "+logtext.Truncate(logtext.Clip(u.Scheme), 16)+"://"+logtext.Truncate(logtext.Clip(u.Hostname()), 80))
	where = strings.Join(at, ", ")
	if !tokenURIAllowed(u.Scheme, u.Hostname()) {
		return nil, "", (&Error{Code: CodeUpstream, msg: tokenURIRefused}).at(where)
	}
	out, _ = json.Marshal(f)
	return out, where, nil
}

// tokenURIRefused is the agent's message for a credential whose token_uri
// is not Google's.
const tokenURIRefused = "credential token_uri not allowed: want https on oauth2.googleapis.com, accounts.google.com or another *.googleapis.com host (http only to loopback); no request was sent"

// tokenURIAllowed is the rule for where a signed assertion, a refresh token
// or a client secret may go: Google's token endpoints over https, or a
// loopback host (the fakes) over http or https.
func tokenURIAllowed(scheme, host string) bool {
	switch scheme {
	case "https":
		return host == "accounts.google.com" || policy.IsGoogleAPIHost(host) || urlrule.IsLoopbackHost(host)
	case "http":
		return urlrule.IsLoopbackHost(host)
	}
	return false
}

// checkType allows exactly the expected credential type. Anything else,
// external_account above all (it can carry attacker-chosen URLs), is refused
// before Google's library sees it.
func checkType(data []byte, want google.CredentialsType) ([]byte, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, &Error{Code: CodeUpstream, msg: fmt.Sprintf("credential is not valid JSON (want a %s document)", want)}
	}
	switch {
	case head.Type == string(want):
		return data, nil
	case head.Type == "" && want == google.AuthorizedUser:
		// Bare {client_id, client_secret, refresh_token} documents are
		// authorized-user credentials by construction of the account.
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, &Error{Code: CodeUpstream, msg: "authorized_user credential is not a JSON object"}
		}
		doc["type"] = string(google.AuthorizedUser)
		out, _ := json.Marshal(doc)
		return out, nil
	}
	return nil, &Error{Code: CodeUpstream, msg: fmt.Sprintf("credential type %q is not allowed here (want %s)", logtext.Truncate(head.Type, 40), want)}
}

func (m *Minter) inlineAuthorizedUser(a *policy.Account) []byte {
	uri := m.AuthorizedUserTokenURI
	if uri == "" {
		uri = DefaultTokenURI
	}
	out, _ := json.Marshal(map[string]string{
		"type":          string(google.AuthorizedUser),
		"client_id":     a.AuthorizedUserClientId,
		"client_secret": a.AuthorizedUserClientSecret,
		"refresh_token": a.AuthorizedUserRefreshToken,
		"token_uri":     uri,
	})
	return out
}

func (m *Minter) impersonate(ctx context.Context, a *policy.Account) (*oauth2.Token, error) {
	if m.IAM == nil {
		return nil, &Error{Code: CodeUpstream, msg: "keyless account but the broker has no IAM Credentials client"}
	}
	// No client-side retries: the token cache and the agents retry, and a
	// retrying client would hold every waiting request until the deadline.
	resp, err := m.IAM.GenerateAccessToken(ctx, &credentialspb.GenerateAccessTokenRequest{
		Name:     "projects/-/serviceAccounts/" + a.ImpersonateServiceAccount,
		Scope:    a.ScopeList(),
		Lifetime: durationpb.New(a.Lifetime()),
	}, gax.WithRetry(func() gax.Retryer { return nil }))
	if err != nil {
		return nil, iamError(err, a.ImpersonateServiceAccount)
	}
	if resp.GetAccessToken() == "" || resp.GetExpireTime() == nil {
		return nil, &Error{Code: CodeUpstream, msg: "IAM Credentials answered without a token"}
	}
	return &oauth2.Token{AccessToken: resp.GetAccessToken(), TokenType: "Bearer", Expiry: resp.GetExpireTime().AsTime()}, nil
}

func (m *Minter) httpClient() *http.Client {
	if m.HTTPClient != nil {
		return m.HTTPClient
	}
	return defaultClient
}

var oauthErrorRE = regexp.MustCompile(`^[a-z_]{1,40}$`)

// MaxIdleConns is how many idle connections to token endpoints the default
// client keeps, per host: as many as broker/tokencache lets mints run at
// once, so a burst of mints (a herd after an outage) reuses its connections
// instead of opening (and, with TLS, handshaking) one per mint and closing
// it again, which http.DefaultTransport's two idle connections per host did.
const MaxIdleConns = 64

var defaultClient = &http.Client{Timeout: 30 * time.Second, Transport: sharedTransport()}

// sharedTransport is http.DefaultTransport's settings (proxy from the
// environment, HTTP/2, timeouts) with MaxIdleConns idle connections per host.
func sharedTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = MaxIdleConns
	t.MaxIdleConnsPerHost = MaxIdleConns
	return t
}

func secretError(err error) error {
	var se *secretref.Error
	if errors.As(err, &se) {
		code := CodeUpstream
		if se.Unavailable {
			code = CodeUnavailable
		}
		// The reference (added by fromSecret) is for the log only.
		return &Error{Code: code, msg: "credential secret: " + se.Reason()}
	}
	return &Error{Code: CodeUnavailable, msg: "cannot read the credential secret"}
}

// tokenError reports what Google said (status and RFC 6749 error code)
// without the response body.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		code := re.ErrorCode
		if code == "" {
			// The JWT-bearer path of x/oauth2 leaves the body unparsed.
			var body struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(re.Body, &body) == nil {
				code = body.Error
			}
		}
		// Only an RFC 6749 one-word error code is repeated, whichever path
		// parsed it: anything else is the endpoint's free text.
		if !oauthErrorRE.MatchString(code) {
			code = ""
		}
		invalid := code == "invalid_grant" || status == http.StatusUnauthorized
		msg := fmt.Sprintf("token endpoint answered %d", status)
		if code != "" {
			msg += " " + code
		}
		return &Error{Code: CodeUpstream, msg: msg, InvalidGrant: invalid}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Code: CodeUnavailable, msg: "token endpoint timed out"}
	}
	return &Error{Code: CodeUpstream, msg: "token endpoint unreachable"}
}

// iamError names the service account (and the fix) in the detail only.
func iamError(err error, email string) error {
	var ae *apierror.APIError
	if errors.As(err, &ae) {
		switch code := ae.HTTPCode(); {
		case code == http.StatusForbidden || code == http.StatusUnauthorized:
			return &Error{Code: CodeUpstream,
				msg:    fmt.Sprintf("IAM Credentials refused to mint for the account's service account (%d): grant the broker roles/iam.serviceAccountTokenCreator on it", code),
				detail: fmt.Sprintf("IAM Credentials refused to mint for %s (%d): grant the broker roles/iam.serviceAccountTokenCreator on it", email, code)}
		case code == http.StatusNotFound:
			return &Error{Code: CodeUpstream,
				msg:    "IAM Credentials: the account's service account was not found",
				detail: fmt.Sprintf("IAM Credentials: service account %s not found", email)}
		case code > 0:
			return &Error{Code: CodeUpstream, msg: fmt.Sprintf("IAM Credentials answered %d", code)}
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Code: CodeUnavailable, msg: "IAM Credentials timed out"}
	}
	return &Error{Code: CodeUpstream, msg: "IAM Credentials unreachable or failed"}
}
