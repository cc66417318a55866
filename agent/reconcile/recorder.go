package reconcile

import (
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
)

// Recorder receives the loop's events for metrics (the health package's
// Prometheus metrics implement it). Failure is called only with a word of
// Reasons, so a label can never carry a token or a URL.
type Recorder interface {
	Push()
	Delete()
	Failure(reason string)
	BrokerSuccess(t time.Time)
	OrthancReachable(ok bool)
	// Resubmitted counts one failed upload sent again as a new STOW job.
	Resubmitted()
}

// Failure reasons of the loop itself; broker call failures are recorded
// with brokerclient's Reason words.
const (
	ReasonStoreError         = "store_error"
	ReasonOrthancUnreachable = "orthanc_unreachable"
	ReasonOrthancError       = "orthanc_error"
	ReasonNameConflict       = "name_conflict"
	// ReasonHostNotAllowed: a store's dicomweb_url host is not in
	// AllowedDicomWebHosts, so its token was not pushed.
	ReasonHostNotAllowed = "host_not_allowed"
	// ReasonBadStoreName: the broker named a store outside the store
	// name rule (wire.StoreNameRule); it was ignored.
	ReasonBadStoreName = "bad_store_name"
)

// Reasons lists every reason the loop passes to Recorder.Failure: the
// broker client's, then the loop's own.
func Reasons() []string {
	return append(brokerclient.Reasons(),
		ReasonStoreError, ReasonOrthancUnreachable, ReasonOrthancError, ReasonNameConflict,
		ReasonHostNotAllowed, ReasonBadStoreName)
}

// nopRecorder is the Recorder of a loop built without one.
type nopRecorder struct{}

func (nopRecorder) Push()                   {}
func (nopRecorder) Delete()                 {}
func (nopRecorder) Failure(string)          {}
func (nopRecorder) BrokerSuccess(time.Time) {}
func (nopRecorder) OrthancReachable(bool)   {}
func (nopRecorder) Resubmitted()            {}
