package mint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/googleapis/gax-go/v2/apierror"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
)

func TestCheckTypeAllowsOnlyTheExpectedType(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want google.CredentialsType
		err  string // "" for accepted
	}{
		{"service account", `{"type":"service_account","client_email":"a@b"}`, google.ServiceAccount, ""},
		{"authorized user", `{"type":"authorized_user","refresh_token":"r"}`, google.AuthorizedUser, ""},
		{"bare authorized user", `{"client_id":"c","client_secret":"s","refresh_token":"r"}`, google.AuthorizedUser, ""},
		{"external account", `{"type":"external_account","token_url":"https://evil.example/"}`, google.ServiceAccount, `"external_account" is not allowed`},
		{"external account as user", `{"type":"external_account"}`, google.AuthorizedUser, `"external_account" is not allowed`},
		{"user where a key is expected", `{"type":"authorized_user"}`, google.ServiceAccount, "want service_account"},
		{"impersonated", `{"type":"impersonated_service_account"}`, google.ServiceAccount, "not allowed"},
		{"untyped key", `{"private_key":"-----BEGIN"}`, google.ServiceAccount, "not allowed"},
		{"not JSON", `-----BEGIN PRIVATE KEY-----`, google.ServiceAccount, "not valid JSON"},
		{"array", `[1]`, google.AuthorizedUser, "not valid JSON"},
		{"long type is cut", `{"type":"` + strings.Repeat("x", 100) + `"}`, google.ServiceAccount, `"` + strings.Repeat("x", 40) + `…" is not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := checkType([]byte(tt.doc), tt.want)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				var head struct{ Type string }
				json.Unmarshal(out, &head)
				if head.Type != string(tt.want) {
					t.Fatalf("type %q", head.Type)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if strings.Contains(err.Error(), "evil.example") || strings.Contains(err.Error(), "BEGIN") {
				t.Fatalf("error echoes the document: %v", err)
			}
		})
	}
}

func TestTokenErrorKeepsOnlyTheErrorWord(t *testing.T) {
	resp := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	tests := []struct {
		name    string
		err     error
		msg     string
		invalid bool
		code    string
	}{
		{"jwt path, body unparsed", &oauth2.RetrieveError{Response: resp(400), Body: []byte(`{"error":"invalid_grant","error_description":"key ya29.secret disabled"}`)}, "token endpoint answered 400 invalid_grant", true, CodeUpstream},
		{"refresh path, parsed", &oauth2.RetrieveError{Response: resp(400), ErrorCode: "invalid_grant", ErrorDescription: "ya29.secret"}, "token endpoint answered 400 invalid_grant", true, CodeUpstream},
		{"401", &oauth2.RetrieveError{Response: resp(401), Body: []byte(`nope`)}, "token endpoint answered 401", true, CodeUpstream},
		{"5xx", &oauth2.RetrieveError{Response: resp(503), Body: []byte(`<html>ya29.secret</html>`)}, "token endpoint answered 503", false, CodeUpstream},
		{"odd error word", &oauth2.RetrieveError{Response: resp(400), Body: []byte(`{"error":"ya29.SECRET VALUE"}`)}, "token endpoint answered 400", false, CodeUpstream},
		{"odd parsed error word", &oauth2.RetrieveError{Response: resp(400), ErrorCode: "ya29.SECRET VALUE"}, "token endpoint answered 400", false, CodeUpstream},
		{"transport", errors.New("dial tcp: connection refused"), "token endpoint unreachable", false, CodeUpstream},
	}
	for _, tt := range tests {
		err := tokenError(tt.err)
		var me *Error
		if !errors.As(err, &me) || me.Error() != tt.msg || me.InvalidGrant != tt.invalid || me.Code != tt.code {
			t.Errorf("%s: %+v, want %q invalid=%v", tt.name, err, tt.msg, tt.invalid)
		}
		if strings.Contains(strings.ToLower(err.Error()), "ya29") {
			t.Errorf("%s: leaks response text: %v", tt.name, err)
		}
	}
}

func TestIAMErrorNamesTheFix(t *testing.T) {
	const sa = "store@p.iam.gserviceaccount.com"
	api := func(code int) error {
		ae, ok := apierror.FromError(&googleapi.Error{Code: code, Message: "ya29.secret detail"})
		if !ok {
			t.Fatalf("no APIError for %d", code)
		}
		return fmt.Errorf("generateAccessToken: %w", ae)
	}
	tests := []struct {
		name string
		err  error
		msg  string
		code string
	}{
		{"denied", api(403), "IAM Credentials refused to mint for " + sa + " (403): grant the broker roles/iam.serviceAccountTokenCreator on it", CodeUpstream},
		{"unauthenticated", api(401), "IAM Credentials refused to mint for " + sa + " (401): grant the broker roles/iam.serviceAccountTokenCreator on it", CodeUpstream},
		{"no such account", api(404), "IAM Credentials: service account " + sa + " not found", CodeUpstream},
		{"server error", api(503), "IAM Credentials answered 503", CodeUpstream},
		{"rate limited", api(429), "IAM Credentials answered 429", CodeUpstream},
		{"other status", api(400), "IAM Credentials answered 400", CodeUpstream},
		{"deadline", context.DeadlineExceeded, "IAM Credentials timed out", CodeUnavailable},
		{"transport", errors.New("dial tcp: connection refused"), "IAM Credentials unreachable or failed", CodeUpstream},
	}
	for _, tt := range tests {
		err := iamError(tt.err, sa)
		var me *Error
		// The message naming the service account and the fix is the
		// broker's log detail; the agent's message never names the account.
		if !errors.As(err, &me) || me.Detail() != tt.msg || me.Code != tt.code {
			t.Errorf("%s: %+v, want %q (%s)", tt.name, err, tt.msg, tt.code)
		}
		if strings.Contains(err.Error(), "ya29") || strings.Contains(me.Detail(), "ya29") {
			t.Errorf("%s: leaks response text: %v", tt.name, err)
		}
		if strings.Contains(err.Error(), sa) {
			t.Errorf("%s: agent message names the service account: %v", tt.name, err)
		}
		if strings.Contains(tt.msg, "roles/iam.serviceAccountTokenCreator") && !strings.Contains(err.Error(), "roles/iam.serviceAccountTokenCreator") {
			t.Errorf("%s: agent message lost the fix: %v", tt.name, err)
		}
	}
}
