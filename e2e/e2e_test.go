package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/dicomgen"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

const checkInterval = 2 * time.Second

// TestLongLivedTokens runs the scenarios that need no token rotation on one
// stack with two stores and one-hour tokens: round trip (1), cross-store
// refusal (6), site restart (3), revocation (5), a dicomweb_url host the
// agent does not allow (8) and the leak check (7).
func TestLongLivedTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t, stack.Options{Stores: 2, TokenLifetime: time.Hour, CheckInterval: checkInterval})
	storeA, storeB := s.Stores()[0], s.Stores()[1]

	info, err := dicomgen.Study(3)
	if err != nil {
		t.Fatal(err)
	}
	var siteStudyID string

	t.Run("1 STOW, QIDO and retrieve through the site's DICOMweb client", func(t *testing.T) {
		ctx := ctxFor(t, time.Minute)
		var ids []string
		siteStudyID, ids, err = stack.Upload(ctx, s.Site, info.Files)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 3 {
			t.Fatalf("uploaded %d instances, want 3", len(ids))
		}
		if id, _, err := stack.FindStudy(ctx, s.CloudOrthanc, info.StudyUID); err != nil || id != "" {
			t.Fatalf("the cloud already has the study (id %q, err %v)", id, err)
		}
		if err := stack.StowWait(ctx, s.Site, storeA.Name, []string{siteStudyID}); err != nil {
			t.Fatal(err)
		}
		if _, n, err := stack.FindStudy(ctx, s.CloudOrthanc, info.StudyUID); err != nil || n != 3 {
			t.Fatalf("after STOW the cloud store holds %d instances of the study (err %v), want 3", n, err)
		}
		// The site's requests carried the token the broker issued for store-a.
		want := wire.Fingerprint(latestToken(t, s, storeA.Name))
		if got := s.Front.BearerFingerprints(storeA.Path); len(got) != 1 || got[0] != want {
			t.Errorf("bearer tokens seen at %s: %v, want exactly the issued one %s", storeA.Name, got, want)
		}

		found, err := stack.QIDOStudy(ctx, s.Site, storeA.Name, info.StudyUID)
		if err != nil || !found {
			t.Fatalf("QIDO for the study: found=%v err=%v", found, err)
		}
		other, err := dicomgen.NewUID()
		if err != nil {
			t.Fatal(err)
		}
		if found, err := stack.QIDOStudy(ctx, s.Site, storeA.Name, other); err != nil || found {
			t.Fatalf("QIDO for a study that was never sent: found=%v err=%v", found, err)
		}

		if err := stack.DeleteStudy(ctx, s.Site, siteStudyID); err != nil {
			t.Fatal(err)
		}
		if id, _, err := stack.FindStudy(ctx, s.Site, info.StudyUID); err != nil || id != "" {
			t.Fatalf("the site still has the study after DELETE (id %q, err %v)", id, err)
		}
		if err := stack.RetrieveWait(ctx, s.Site, storeA.Name, info.StudyUID); err != nil {
			t.Fatal(err)
		}
		id, n, err := stack.FindStudy(ctx, s.Site, info.StudyUID)
		if err != nil || n != 3 {
			t.Fatalf("after retrieve the site holds %d instances (err %v), want 3", n, err)
		}
		siteStudyID = id
	})

	t.Run("6 a token for one store is refused at another store", func(t *testing.T) {
		tokA, tokB := latestToken(t, s, storeA.Name), latestToken(t, s, storeB.Name)
		if tokA == tokB {
			t.Fatal("both stores got the same token")
		}
		_, refusedBefore := s.Cloud.DICOMweb.Counts(storeB.Path)
		cases := []struct {
			name  string
			url   string
			token string
			want  int
		}{
			{"store-a token at store-a", storeA.DICOMwebURL + "studies", tokA, http.StatusOK},
			{"store-a token at store-b", storeB.DICOMwebURL + "studies", tokA, http.StatusForbidden},
			{"store-b token at store-a", storeA.DICOMwebURL + "studies", tokB, http.StatusForbidden},
			{"store-b token at store-b", storeB.DICOMwebURL + "studies", tokB, http.StatusOK},
			{"no token at store-b", storeB.DICOMwebURL + "studies", "", http.StatusUnauthorized},
		}
		for _, c := range cases {
			if got := frontGET(t, c.url, c.token); got != c.want {
				t.Errorf("%s: HTTP %d, want %d", c.name, got, c.want)
			}
		}
		if _, refused := s.Cloud.DICOMweb.Counts(storeB.Path); refused != refusedBefore+2 {
			t.Errorf("store-b refusals went from %d to %d, want +2", refusedBefore, refused)
		}
	})

	t.Run("3 site Orthanc restart: entries re-pushed without a broker call", func(t *testing.T) {
		ctx := ctxFor(t, 2*time.Minute)
		before := map[string]time.Time{}
		for _, st := range s.Stores() {
			exp, ok, err := managedExpiry(ctx, s, st.Name)
			if err != nil || !ok {
				t.Fatalf("no managed entry for %s before the restart (err %v)", st.Name, err)
			}
			before[st.Name] = exp
		}
		// With one-hour tokens the agent's next broker call is its periodic
		// store listing; start when that is at least 20 s away, so any
		// broker request in the window is a fault.
		if _, err := s.WaitFor(ctx, 75*time.Second, "the agent's next broker call 20 s away", func() (bool, error) {
			st, err := s.AgentStatus(ctx)
			if err != nil {
				return false, err
			}
			return st.Broker.NextCall != nil && time.Until(*st.Broker.NextCall) > 20*time.Second, nil
		}); err != nil {
			t.Fatal(err)
		}
		requests := s.Tap.TotalRequests()
		auditBefore, err := s.Audit()
		if err != nil {
			t.Fatal(err)
		}

		restartAt := time.Now()
		if err := s.RestartSite(); err != nil {
			t.Fatal(err)
		}
		readyAt := time.Now()
		wait, err := s.WaitFor(ctx, 30*time.Second, "managed entries back", func() (bool, error) {
			servers, err := s.ManagedServers(ctx)
			if err != nil {
				return false, err
			}
			return len(servers) == len(s.Stores()), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("site Orthanc restart took %s; managed entries back %s after it answered (CheckInterval %s)",
			readyAt.Sub(restartAt).Round(time.Millisecond), wait.Round(time.Millisecond), checkInterval)
		if wait > checkInterval+time.Second {
			t.Errorf("entries back after %s, want within CheckInterval + 1 s = %s", wait, checkInterval+time.Second)
		}
		for _, st := range s.Stores() {
			exp, ok, err := managedExpiry(ctx, s, st.Name)
			if err != nil || !ok || !exp.Equal(before[st.Name]) {
				t.Errorf("%s re-pushed with expiry %v (ok %v, err %v), want the cached token's %v", st.Name, exp, ok, err, before[st.Name])
			}
		}
		if got := s.Tap.TotalRequests(); got != requests {
			t.Errorf("the agent called the broker %d time(s) during the restart: %v", got-requests, s.Tap.Requests())
		}
		if auditAfter, err := s.Audit(); err != nil || len(auditAfter) != len(auditBefore) {
			t.Errorf("audit lines went from %d to %d (err %v): a token was issued", len(auditBefore), len(auditAfter), err)
		}
		// The re-pushed entry works.
		if found, err := stack.QIDOStudy(ctx, s.Site, storeA.Name, info.StudyUID); err != nil || !found {
			t.Errorf("QIDO after the restart: found=%v err=%v", found, err)
		}
	})

	t.Run("5 a store revoked at the broker is deleted, unmanaged entries stay", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		unmanaged := map[string]any{"Url": "http://127.0.0.1:9/dicom-web/", "HttpHeaders": map[string]string{"X-Site": "kept"}, "Note": "made by hand"}
		if err := s.Site.DoContext(ctx, http.MethodPut, "/dicom-web/servers/unmanaged", unmanaged, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeStore(storeB.Name); err != nil {
			t.Fatal(err)
		}
		// The agent learns it at its next store listing (every minute with
		// long tokens) and deletes the entry at once.
		wait, err := s.WaitFor(ctx, 90*time.Second, "store-b entry deleted", func() (bool, error) {
			servers, err := s.ManagedServers(ctx)
			if err != nil {
				return false, err
			}
			_, has := servers[storeB.Name]
			return !has, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("store-b entry deleted %s after the policy edit", wait.Round(time.Millisecond))

		_, all, err := stack.Servers(ctx, s.Site)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := all[storeB.Name]; ok {
			t.Errorf("store-b still listed: %v", all[storeB.Name])
		}
		um, ok := all["unmanaged"]
		if !ok {
			t.Fatalf("the unmanaged entry was deleted; servers: %v", keys(all))
		}
		if um["Url"] != unmanaged["Url"] || um["Note"] != "made by hand" || fmt.Sprint(um["HttpHeaders"]) != "[X-Site]" {
			t.Errorf("the unmanaged entry changed: %v", um)
		}
		if _, ok := all[storeA.Name]; !ok {
			t.Errorf("store-a's entry is gone too")
		}
		if err := stack.StowWait(ctx, s.Site, storeA.Name, []string{siteStudyID}); err != nil {
			t.Errorf("STOW to the store still granted: %v", err)
		}
		if _, err := stack.QIDOStudy(ctx, s.Site, storeB.Name, info.StudyUID); err == nil {
			t.Errorf("QIDO through the deleted store-b entry succeeded")
		}
		st, err := s.AgentStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Healthy || len(st.Stores) != 1 || st.Stores[0].Store != storeA.Name {
			t.Errorf("agent status after revocation: healthy=%v stores=%v", st.Healthy, st.Stores)
		}
	})

	t.Run("8 a dicomweb_url host the agent does not allow is never pushed", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		// The stack lists its loopback fake front explicitly (the default
		// allows only healthcare.googleapis.com).
		front, _ := url.Parse(s.Front.URL())
		if !slices.Equal(s.AgentAllowedDicomWebHosts, []string{front.Host}) {
			t.Fatalf("agent AllowedDicomWebHosts %v, want [%s]", s.AgentAllowedDicomWebHosts, front.Host)
		}
		before, err := s.ManagedServers(ctx)
		if err != nil || before[storeA.Name].URL == "" {
			t.Fatalf("store-a entry before: %v %v", before, err)
		}
		// The broker now hands out another loopback service (the cloud
		// Orthanc itself, not the token-checking front): a URL the broker
		// accepts but the agent was not told to trust.
		cloud, _ := url.Parse(s.CloudOrthanc.URL)
		origBase := s.Policy().BaseUrl
		if err := s.UpdatePolicy(func(p *stack.Policy) { p.BaseUrl = "http://" + cloud.Host + "/v1/" }); err != nil {
			t.Fatal(err)
		}
		lastHUP := time.Time{}
		wait, err := s.WaitFor(ctx, 90*time.Second, "store-a refused", func() (bool, error) {
			if time.Since(lastHUP) > 2*time.Second { // sync now rather than at the next store listing
				lastHUP = time.Now()
				if err := s.ReloadAgent(); err != nil {
					return false, err
				}
			}
			st, err := s.AgentStatus(ctx)
			if err != nil {
				return false, err
			}
			for _, ss := range st.Stores {
				if ss.Store == storeA.Name && ss.State == "error" && strings.Contains(ss.LastError, `"`+cloud.Host+`"`) {
					return !st.Healthy, nil
				}
			}
			return false, fmt.Errorf("status %v", st.Stores)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("store-a refused %s after the policy edit", wait.Round(time.Millisecond))
		// Give the agent a few check intervals to misbehave.
		time.Sleep(2 * checkInterval)
		after, err := s.ManagedServers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a, b := before[storeA.Name], after[storeA.Name]
		if a.URL != b.URL || a.Properties[orthanc.ExpiryProperty] != b.Properties[orthanc.ExpiryProperty] {
			t.Errorf("the store-a entry pushed before changed: %+v -> %+v", a, b)
		}
		metrics, err := httpGet(ctx, "http://"+s.AgentListen+"/metrics")
		if err != nil || !regexp.MustCompile(`orthanc_gcp_agent_failures_total\{reason="host_not_allowed"\} [1-9]`).Match(metrics) {
			t.Errorf("/metrics does not count host_not_allowed (err %v)", err)
		}
		logs, _ := s.AgentLogs()
		if !strings.Contains(string(logs), `"host":"`+cloud.Host+`"`) {
			t.Error("the agent log does not name the refused host")
		}

		if err := s.UpdatePolicy(func(p *stack.Policy) { p.BaseUrl = origBase }); err != nil {
			t.Fatal(err)
		}
		lastHUP = time.Time{}
		if _, err := s.WaitFor(ctx, 90*time.Second, "agent healthy again", func() (bool, error) {
			if time.Since(lastHUP) > 2*time.Second {
				lastHUP = time.Now()
				if err := s.ReloadAgent(); err != nil {
					return false, err
				}
			}
			st, err := s.AgentStatus(ctx)
			if err != nil {
				return false, err
			}
			return st.Healthy, fmt.Errorf("%s", st.Reason)
		}); err != nil {
			t.Fatal(err)
		}
		if err := stack.StowWait(ctx, s.Site, storeA.Name, []string{siteStudyID}); err != nil {
			t.Errorf("STOW after recovery: %v", err)
		}
	})

	t.Run("7 no token in logs, server listing, health or metrics", func(t *testing.T) {
		assertNoTokenLeaks(t, s)
	})
}

// TestShortLivedTokens runs the rotation scenarios on one stack with 20 s
// tokens: continuous traffic over several lifetimes (2), a broker outage
// (4) and the leak check over every rotated token (7).
func TestShortLivedTokens(t *testing.T) {
	t.Parallel()
	const lifetime = 20 * time.Second
	s := newStack(t, stack.Options{Stores: 1, TokenLifetime: lifetime, RefreshMargin: 5 * time.Second, CheckInterval: checkInterval})
	store := s.Stores()[0]

	info, err := dicomgen.Study(1)
	if err != nil {
		t.Fatal(err)
	}
	studyID, _, err := stack.Upload(ctxFor(t, time.Minute), s.Site, info.Files)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("2 continuous STOW and QIDO over several token lifetimes", func(t *testing.T) {
		const window = 65 * time.Second
		mintedBefore := s.Cloud.Tokens.Minted(store.ServiceAccount)
		bearersBefore := len(s.Front.BearerFingerprints(store.Path))
		statusBefore := s.Front.Statuses(store.Path)
		var stows, qidos int
		var failures []string
		end := time.Now().Add(window)
		for time.Now().Before(end) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := stack.StowWait(ctx, s.Site, store.Name, []string{studyID}); err != nil {
				failures = append(failures, fmt.Sprintf("%s STOW: %v", time.Now().Format("15:04:05.000"), err))
			}
			stows++
			found, err := stack.QIDOStudy(ctx, s.Site, store.Name, info.StudyUID)
			if err != nil || !found {
				failures = append(failures, fmt.Sprintf("%s QIDO: found=%v %v", time.Now().Format("15:04:05.000"), found, err))
			}
			qidos++
			cancel()
			time.Sleep(100 * time.Millisecond)
		}
		minted := s.Cloud.Tokens.Minted(store.ServiceAccount) - mintedBefore
		bearers := len(s.Front.BearerFingerprints(store.Path)) - bearersBefore
		t.Logf("%d STOW + %d QIDO in %s, %d failures; %d tokens minted, %d distinct bearer tokens used by Orthanc",
			stows, qidos, window, len(failures), minted, bearers)
		if len(failures) > 0 {
			t.Errorf("%d failures, first ones: %v", len(failures), failures[:min(5, len(failures))])
		}
		if stows < 20 {
			t.Errorf("only %d STOW in %s", stows, window)
		}
		// 65 s of 20 s tokens refreshed 5 s before expiry: a new token every
		// ~15 s, so at least 3 in the window.
		if minted < 3 {
			t.Errorf("the token server minted %d tokens during %s of %s tokens; the agent did not refresh", minted, window, lifetime)
		}
		if bearers < 3 {
			t.Errorf("Orthanc presented %d new bearer tokens to the store, want at least 3", bearers)
		}
		statusAfter := s.Front.Statuses(store.Path)
		for code, n := range statusAfter {
			if code >= 400 && n != statusBefore[code] {
				t.Errorf("the store answered HTTP %d %d time(s) during the run", code, n-statusBefore[code])
			}
		}
		// Each minted token was audited by the broker.
		fps := map[string]bool{}
		lines, err := s.Audit()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range lines {
			fps[a.Fingerprint] = true
		}
		if len(fps) < minted {
			t.Errorf("%d distinct tokens in the audit log, fewer than the %d minted in the window", len(fps), minted)
		}
	})

	t.Run("4 broker outage: pushed token used until it expires, recovery when back", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		// Kill the broker right after a refresh, so the pushed token has
		// nearly its whole life ahead.
		tokensBefore := s.Tap.Requests()["POST /v1/tokens"]
		if _, err := s.WaitFor(ctx, 30*time.Second, "a token refresh", func() (bool, error) {
			return s.Tap.Requests()["POST /v1/tokens"] > tokensBefore, nil
		}); err != nil {
			t.Fatal(err)
		}
		var expiry time.Time
		if _, err := s.WaitFor(ctx, 10*time.Second, "the refreshed token pushed", func() (bool, error) {
			exp, ok, err := managedExpiry(ctx, s, store.Name)
			expiry = exp
			return ok && time.Until(exp) > lifetime/2, err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.KillBroker(); err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		requestsAtKill := s.Tap.TotalRequests()

		stows := 0
		for time.Until(expiry) > 2*time.Second {
			if err := stack.StowWait(ctx, s.Site, store.Name, []string{studyID}); err != nil {
				t.Fatalf("STOW %s after the broker died, %s before the token expires: %v",
					time.Since(killedAt).Round(time.Millisecond), time.Until(expiry).Round(time.Millisecond), err)
			}
			stows++
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("broker down: %d STOW succeeded on the pushed token, the last %s before it expired", stows, time.Until(expiry).Round(time.Millisecond))
		if stows == 0 {
			t.Fatal("no STOW attempted while the token was valid")
		}
		// Past expiry the site cannot reach the store: the test sees the real
		// token expire, not a token that happens to last.
		if _, err := s.WaitFor(ctx, 30*time.Second, "the pushed token expired", func() (bool, error) {
			return time.Now().After(expiry.Add(time.Second)), nil
		}); err != nil {
			t.Fatal(err)
		}
		// A STOW job, not a synchronous STOW: DICOMweb 1.7 drops a synchronous
		// request whose job is still Pending at its first poll (busy CI).
		var jobErr *stack.JobError
		if err := stack.StowWait(ctx, s.Site, store.Name, []string{studyID}); !errors.As(err, &jobErr) {
			t.Errorf("STOW with the expired token: %v, want the STOW job to fail", err)
		}
		if _, err := stack.QIDOStudy(ctx, s.Site, store.Name, info.StudyUID); httpStatus(err) != http.StatusUnauthorized {
			t.Errorf("QIDO with the expired token: %v, want HTTP 401", err)
		}
		if st, err := s.AgentStatus(ctx); err != nil || st.Healthy {
			t.Errorf("agent healthy=%v (err %v) with an expired token and no broker", st != nil && st.Healthy, err)
		}
		if tries := s.Tap.TotalRequests() - requestsAtKill; tries < 2 {
			t.Errorf("the agent tried the broker %d time(s) during the outage, want retries", tries)
		}
		if _, ok, err := managedExpiry(ctx, s, store.Name); err != nil || !ok {
			t.Errorf("the agent removed its entry during the outage (ok %v, err %v)", ok, err)
		}

		if err := s.StartBroker(); err != nil {
			t.Fatal(err)
		}
		backAt := time.Now()
		t.Logf("broker was down %s", backAt.Sub(killedAt).Round(time.Millisecond))
		wait, err := s.WaitFor(ctx, 90*time.Second, "a fresh token pushed", func() (bool, error) {
			exp, ok, err := managedExpiry(ctx, s, store.Name)
			return ok && exp.After(time.Now().Add(2*time.Second)), err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := stack.StowWait(ctx, s.Site, store.Name, []string{studyID}); err != nil {
			t.Fatalf("STOW after the broker came back: %v", err)
		}
		recovery := time.Since(backAt)
		t.Logf("recovered %s after the broker came back (fresh token pushed after %s)", recovery.Round(time.Millisecond), wait.Round(time.Millisecond))
		if recovery >= time.Minute {
			t.Errorf("recovery took %s, want under the 60 s backoff cap", recovery)
		}
		if _, err := s.WaitAgentHealthy(ctx, 10*time.Second); err != nil {
			t.Error(err)
		}
	})

	t.Run("7 no token in logs, server listing, health or metrics", func(t *testing.T) {
		assertNoTokenLeaks(t, s)
	})
}

func keys(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
