package stack

import (
	"context"
	"errors"
	"net/http"
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
