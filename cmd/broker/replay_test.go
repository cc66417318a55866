package main

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// The replay the jti cache cannot stop: each Cloud Run instance has its
// own cache, so one captured token request is accepted once by every
// instance. Three broker processes play three instances. The agent's own
// request works; the same request replayed to the other two is answered,
// but only with tokens sealed to the agent's one-request key, which the
// attacker does not have. No answer, broker log or agent error holds a
// plaintext token.
func TestReplayAcrossInstancesYieldsNothing(t *testing.T) {
	tokens := fakegcp.NewTokenServer()
	if err := tokens.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokens.Close() })
	cred, _, err := tokens.NewServiceAccountKey("store-a@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(credPath, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := agentkey.Generate()
	const audience = "https://broker.example.test"
	policy, _ := json.Marshal(map[string]any{
		"Audience": audience,
		"BaseUrl":  "http://127.0.0.1:1/v1/",
		"Accounts": map[string]any{"store-a": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "a", "ServiceAccountSecret": credPath}},
		"Agents":   map[string]any{"clinic-a": map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": []string{"store-a"}}},
	})
	var instances []running
	for range 3 {
		instances = append(instances, startBrokerOn(t, freePort(t), string(policy)))
	}

	// The agent's request to instance 0, captured on the way (as a
	// TLS-inspecting proxy would log it).
	var captured struct {
		auth string
		body []byte
	}
	rec := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == wire.PathTokens {
			captured.auth = r.Header.Get("Authorization")
			captured.body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(captured.body))
		}
		r.URL.Scheme, r.URL.Host = "http", instances[0].addr
		return http.DefaultTransport.RoundTrip(r)
	})
	agent, err := brokerclient.New(brokerclient.Options{URL: audience, AgentID: "clinic-a", Key: priv, Transport: rec, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got, err := agent.Tokens(context.Background(), []string{"store-a"})
	if err != nil || len(got.Tokens) != 1 {
		t.Fatalf("the agent's own request: %+v, %v", got, err)
	}
	plain := string(got.Tokens[0].AccessToken)
	if _, ok := tokens.Valid(plain); !ok || captured.auth == "" {
		t.Fatalf("the agent did not get a real token (captured %t)", captured.auth != "")
	}
	if errText := fmt.Sprint(got, err); strings.Contains(errText, plain) {
		t.Fatal("the agent's result prints the token")
	}

	attacker, _ := ecdh.X25519().GenerateKey(rand.Reader)
	for i, inst := range instances {
		req, _ := http.NewRequest(http.MethodPost, "http://"+inst.addr+wire.PathTokens, bytes.NewReader(captured.body))
		req.Header.Set("Authorization", captured.auth)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte(plain)) || bytes.Contains(body, []byte("ya29.")) || bytes.Contains(body, []byte(`"access_token"`)) {
			t.Fatalf("instance %d answered a plaintext token: %s", i, body)
		}
		if i == 0 {
			// The instance that saw the request refuses the replay.
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("instance 0 answered the replay with %d", resp.StatusCode)
			}
			continue
		}
		// The others have never seen this jti: they answer, sealed.
		var ans wire.TokenResponse
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &ans) != nil || len(ans.Tokens) != 1 {
			t.Fatalf("instance %d: %d %s", i, resp.StatusCode, body)
		}
		if tok, err := tokenseal.Open(attacker, "store-a", ans.Tokens[0].SealedAccessToken); err == nil || tok != "" {
			t.Fatalf("instance %d: the replayed answer opened without the agent's key", i)
		}
	}
	for i, inst := range instances {
		inst.cmd.Process.Kill()
		<-inst.exited
		if strings.Contains(inst.out.String(), plain) || strings.Contains(inst.out.String(), "ya29.") {
			t.Errorf("broker instance %d logged a token", i)
		}
		if !strings.Contains(inst.out.String(), `"event":"token_issued"`) && i > 0 {
			t.Errorf("broker instance %d did not audit the replayed issuance", i)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
