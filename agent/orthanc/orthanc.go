// Package orthanc is where the agent pushes tokens: a small client for
// Orthanc's DICOMweb plugin REST API that creates, lists and deletes the
// DICOMweb server entries ({root}servers/{name}) the agent manages, and
// that reads Orthanc's jobs and starts STOW-RS jobs to send failed
// uploads again (jobs.go). It is also the last gate for a token: PutServer
// sends no definition whose URL its allow-list (urlrule.AllowList) refuses.
//
// Orthanc answers PUT by replacing the whole entry, shows user properties
// (with bools as "1"/"0") but hides header values in GET servers?expand,
// and answers 400 to a DELETE of a missing entry.
package orthanc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// maxResponseBytes caps Orthanc's answers (a server list is small).
const maxResponseBytes = 4 << 20

// ErrBadServerName is returned, without any request being sent, for a
// server name that cannot stay one path segment: empty, "." or "..", or
// holding a slash, a backslash or a control character. Orthanc decodes
// %2F and resolves dot segments, so url.PathEscape alone would let
// "../../peers/evil" write a peer instead of a DICOMweb server.
var ErrBadServerName = errors.New("orthanc: not a usable DICOMweb server name")

// ErrNoSuchServer is returned by DeleteServer when Orthanc has no entry of
// that name (Orthanc answers 400, not 404).
var ErrNoSuchServer = errors.New("orthanc: no such DICOMweb server")

// Options configure a Client.
type Options struct {
	// URL is Orthanc's REST base, e.g. http://127.0.0.1:8042.
	URL string
	// DicomWebRoot is the plugin root, e.g. /dicom-web/.
	DicomWebRoot string
	// Username and Password for HTTP Basic auth; empty Username: no auth.
	Username, Password string
	// Timeout bounds each request; 0 means 30s.
	Timeout time.Duration
}

// Client talks to one Orthanc.
type Client struct {
	base, root string
	user, pass string
	http       *http.Client
	// hosts is the gate PutServer enforces (urlrule.AllowList).
	hosts *urlrule.AllowList
}

// ErrNoAllowList is New's error when it is given no allow-list: a client
// that could push a token anywhere is never built.
var ErrNoAllowList = errors.New("orthanc: no allow-list of DICOMweb hosts (a client that only reads takes an empty urlrule.AllowList)")

// New builds a Client. hosts is where PutServer may point a token: every
// definition's URL is checked against it before anything is sent
// (docs/design.md, "Agent behaviour"). It is an argument, not an option,
// so no caller can leave it out by accident; nil is refused
// (ErrNoAllowList), and a zero urlrule.AllowList lets the client read
// Orthanc but push nothing.
func New(o Options, hosts *urlrule.AllowList) (*Client, error) {
	if hosts == nil {
		return nil, ErrNoAllowList
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Orthanc closes idle keep-alives after ~1 s and Go does not retry a
	// PUT that meets the closed connection; connections to a local
	// Orthanc are cheap, so do not keep them.
	tr.DisableKeepAlives = true
	tr.Proxy = nil // Orthanc is next door, never behind the host's proxy
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	root := o.DicomWebRoot
	if root == "" {
		root = "/dicom-web/"
	}
	return &Client{
		base:  strings.TrimSuffix(o.URL, "/"),
		root:  root,
		user:  o.Username,
		pass:  o.Password,
		http:  &http.Client{Transport: tr, Timeout: timeout},
		hosts: hosts,
	}, nil
}

// DicomWebHosts is the allow-list PutServer enforces, so a caller can ask
// the very same gate before it gets a token to push.
func (c *Client) DicomWebHosts() *urlrule.AllowList { return c.hosts }

// Definition is the whole server entry the agent pushes.
type Definition struct {
	// URL is the store's DICOMweb URL.
	URL string
	// Token is sent by Orthanc as "Authorization: Bearer <Token>".
	Token string
	// Options are copied as they are (HasDelete, ChunkedTransfers, Timeout, ...).
	Options map[string]json.RawMessage
	// Marker is the agent id stored in the MarkerProperty user property.
	Marker string
	// Expiry is the token's expiry, stored in the ExpiryProperty.
	Expiry time.Time
}

// Property names written into every managed entry.
const (
	MarkerProperty = "OrthancGcpAgent"
	ExpiryProperty = "TokenExpiry"
	// TokenProperty holds wire.Fingerprint of the pushed token (16 hex
	// digits of its SHA-256, as in the broker's audit lines): Orthanc hides
	// header values, so this is how the agent tells which token an entry
	// carries. Two tokens can share an expiry second.
	TokenProperty = "TokenSha256"
)

// FormatExpiry is how Expiry is written, so callers can compare it with
// Server.Properties[ExpiryProperty].
func FormatExpiry(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// MarshalJSON renders the body of the PUT request. The token appears here
// and nowhere else.
func (d Definition) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(d.Options)+4)
	for k, v := range d.Options {
		m[k] = v
	}
	m["Url"] = d.URL
	m["HttpHeaders"] = map[string]string{"Authorization": "Bearer " + d.Token}
	m[MarkerProperty] = d.Marker
	m[ExpiryProperty] = FormatExpiry(d.Expiry)
	m[TokenProperty] = wire.Fingerprint(d.Token)
	return json.Marshal(m)
}

// Server is one entry of GET {root}servers?expand.
type Server struct {
	Name string
	URL  string
	// Properties holds the user properties as strings (bools "1"/"0").
	Properties map[string]string
	// HeaderNames lists the HTTP header names (Orthanc hides the values).
	HeaderNames []string
}

// ManagedBy reports whether the entry carries agentID's marker.
func (s Server) ManagedBy(agentID string) bool {
	return agentID != "" && s.Properties[MarkerProperty] == agentID
}

// Error is a non-2xx answer or a transport failure. It never holds the
// request body, which carries the token.
type Error struct {
	Op     string
	Status int // 0: transport error
	// Msg is Orthanc's short error text (its "Message" field) or the
	// transport error.
	Msg string
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("orthanc %s: %s", e.Op, e.Msg)
	}
	if e.Msg == "" {
		return fmt.Sprintf("orthanc %s: HTTP %d", e.Op, e.Status)
	}
	return fmt.Sprintf("orthanc %s: HTTP %d: %s", e.Op, e.Status, e.Msg)
}

// Unreachable reports whether err means Orthanc could not be reached at all.
func Unreachable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == 0
}

// Ping checks that Orthanc answers GET /system with these credentials.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, c.base+"/system", nil, "GET /system")
	return err
}

// ListServers returns every DICOMweb server entry, managed or not.
func (c *Client) ListServers(ctx context.Context) (map[string]Server, error) {
	op := "GET " + c.root + "servers?expand"
	data, err := c.do(ctx, http.MethodGet, c.base+c.root+"servers?expand", nil, op)
	if err != nil {
		return nil, err
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &Error{Op: op, Status: http.StatusOK, Msg: "answer is not a JSON object of servers"}
	}
	out := make(map[string]Server, len(raw))
	for name, fields := range raw {
		s := Server{Name: name, Properties: map[string]string{}}
		for k, v := range fields {
			switch k {
			case "Url":
				_ = json.Unmarshal(v, &s.URL)
			case "HttpHeaders":
				// A list of names in Orthanc 1.10; an object in some versions.
				var names []string
				if json.Unmarshal(v, &names) == nil {
					s.HeaderNames = names
				} else {
					var m map[string]json.RawMessage
					if json.Unmarshal(v, &m) == nil {
						for h := range m {
							s.HeaderNames = append(s.HeaderNames, h)
						}
					}
				}
			default:
				var str string
				if json.Unmarshal(v, &str) == nil {
					s.Properties[k] = str
				} else if len(v) > 0 && string(v) != "null" {
					s.Properties[k] = string(v) // numbers and bools as JSON text
				}
			}
		}
		out[name] = s
	}
	return out, nil
}

// PutServer creates or replaces the entry name with the whole definition.
// It is the last gate before a token reaches Orthanc: a definition whose
// URL the allow-list refuses is not sent, and the error wraps the
// *urlrule.RefusedError (it names the URL's host and port, never the
// token). Orthanc would otherwise send the token wherever the URL says.
func (c *Client) PutServer(ctx context.Context, name string, d Definition) error {
	if err := checkName(name); err != nil {
		return err
	}
	op := "PUT " + c.root + "servers/" + name
	if err := c.hosts.Check(d.URL); err != nil {
		return fmt.Errorf("orthanc %s: not sent: %w", op, err)
	}
	body, err := json.Marshal(d)
	if err != nil {
		return &Error{Op: op, Msg: "cannot encode definition"}
	}
	_, err = c.do(ctx, http.MethodPut, c.serverURL(name), body, op)
	return err
}

// DeleteServer removes the entry name. It returns an error wrapping
// ErrNoSuchServer when Orthanc has no such entry.
func (c *Client) DeleteServer(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	op := "DELETE " + c.root + "servers/" + name
	_, err := c.do(ctx, http.MethodDelete, c.serverURL(name), nil, op)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusBadRequest {
		return fmt.Errorf("%w: %s", ErrNoSuchServer, name)
	}
	return err
}

// checkName refuses a name that cannot be exactly one path segment.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") ||
		strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: %q", ErrBadServerName, logtext.Clip(name))
	}
	return nil
}

// serverURL is the entry's URL; the name is path-escaped (checkName has
// already refused what escaping cannot protect).
func (c *Client) serverURL(name string) string {
	return c.base + c.root + "servers/" + url.PathEscape(name)
}

func (c *Client) do(ctx context.Context, method, u string, body []byte, op string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, &Error{Op: op, Msg: "bad request URL"}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, &Error{Op: op, Msg: "reading answer failed"}
	}
	if resp.StatusCode/100 != 2 {
		return nil, statusError(op, resp.StatusCode, data)
	}
	return data, nil
}

// transportError is the Error of a request that got no answer.
func transportError(op string, err error) *Error {
	msg := "unreachable"
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error() // without the URL and its escaped name
	}
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "timeout"
	}
	return &Error{Op: op, Msg: msg}
}

// statusError is the Error of a non-2xx answer with body data.
func statusError(op string, status int, data []byte) *Error {
	e := &Error{Op: op, Status: status}
	var oe struct{ Message string }
	// Only the short Message: Details can quote the request.
	if json.Unmarshal(data, &oe) == nil && len(oe.Message) <= 200 {
		e.Msg = oe.Message
	}
	if status == http.StatusUnauthorized {
		e.Msg = "Orthanc refused the agent's user name or password"
	}
	return e
}
