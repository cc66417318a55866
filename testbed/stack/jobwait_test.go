package stack

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/dicomgen"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// TestStowWaitRetrieveWait drives a real Orthanc's DICOMweb client against
// its own DICOMweb server: the jobs are started asynchronously and waited
// for, a Success is nil and a Failure is a *JobError with the plugin's
// reason.
func TestStowWaitRetrieveWait(t *testing.T) {
	o := orthancproc.StartForTest(t, orthancproc.Options{Name: "jobs", Users: map[string]string{"admin": "s3cret-admin"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user, pass := o.User()
	if err := o.DoContext(ctx, http.MethodPut, orthancproc.DICOMwebRoot+"servers/self",
		map[string]any{"Url": o.URL + orthancproc.DICOMwebRoot, "Username": user, "Password": pass}, nil); err != nil {
		t.Fatal(err)
	}
	info, err := dicomgen.Generate(dicomgen.Options{PatientID: "JOBWAIT-1"})
	if err != nil {
		t.Fatal(err)
	}
	study, _, err := Upload(ctx, o, info.Files)
	if err != nil {
		t.Fatal(err)
	}
	if err := StowWait(ctx, o, "self", []string{study}); err != nil {
		t.Fatalf("stow to itself: %v", err)
	}
	if err := RetrieveWait(ctx, o, "self", info.StudyUID); err != nil {
		t.Fatalf("retrieve from itself: %v", err)
	}

	for name, call := range map[string]func() error{
		"stow":     func() error { return StowWait(ctx, o, "nope", []string{study}) },
		"retrieve": func() error { return RetrieveWait(ctx, o, "nope", info.StudyUID) },
	} {
		err := call()
		var je *JobError
		if !errors.As(err, &je) {
			t.Fatalf("%s to a missing server: %v, want a *JobError", name, err)
		}
		if je.Op != name || je.Server != "nope" || je.ID == "" || je.FunctionErrorCode != 7 ||
			je.FunctionErrorDetails != "Inexistent server: nope" || je.Content == "" {
			t.Errorf("%s to a missing server: %+v", name, je)
		}
	}

	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := StowWait(short, o, "self", []string{study}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestStowWaitPendingJob holds both of Orthanc's job threads (ConcurrentJobs
// 2) with uploads to a slow DICOMweb server, so the next job stays Pending
// for a while: the state in which DICOMweb 1.7's synchronous mode gives up
// (its first poll, 100 ms after submitting, is neither Running nor
// Success) and Orthanc drops the request, as a loaded machine made it do in
// the soak. StowWait waits the job out and succeeds.
func TestStowWaitPendingJob(t *testing.T) {
	o := orthancproc.StartForTest(t, orthancproc.Options{Name: "pending", Users: map[string]string{"admin": "s3cret-admin"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Second)
		w.Header().Set("Content-Type", "application/dicom+json")
		io.WriteString(w, "{}")
	}))
	defer slow.Close()
	user, pass := o.User()
	for name, u := range map[string]string{"self": o.URL + orthancproc.DICOMwebRoot, "slow": slow.URL + "/"} {
		if err := o.DoContext(ctx, http.MethodPut, orthancproc.DICOMwebRoot+"servers/"+name,
			map[string]any{"Url": u, "Username": user, "Password": pass}, nil); err != nil {
			t.Fatal(err)
		}
	}
	info, err := dicomgen.Generate(dicomgen.Options{PatientID: "JOBWAIT-2"})
	if err != nil {
		t.Fatal(err)
	}
	study, _, err := Upload(ctx, o, info.Files)
	if err != nil {
		t.Fatal(err)
	}
	holdThreads := func() {
		t.Helper()
		for range 2 {
			if _, err := StowAsync(ctx, o, "slow", []string{study}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // both taken before the next job comes
	}

	holdThreads()
	t0 := time.Now()
	syncErr := Stow(ctx, o, "self", []string{study})
	t.Logf("synchronous STOW while its job is Pending: %v after %s", syncErr, time.Since(t0).Round(time.Millisecond))
	if strings.Contains(o.Versions(), "DICOMweb 1.7") && (syncErr == nil || !strings.Contains(syncErr.Error(), "EOF")) {
		// Measured with Debian's Orthanc 1.10.1 and DICOMweb 1.7; later
		// plugins may wait properly.
		t.Errorf("DICOMweb 1.7's synchronous STOW with its job Pending: %v, want EOF (no answer)", syncErr)
	}

	holdThreads()
	t0 = time.Now()
	if err := StowWait(ctx, o, "self", []string{study}); err != nil {
		t.Fatalf("StowWait while its job is Pending: %v", err)
	}
	if waited := time.Since(t0); waited < time.Second {
		t.Errorf("StowWait came back after %s: its job cannot have been Pending behind the slow uploads", waited)
	}
}
