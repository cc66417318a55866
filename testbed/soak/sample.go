package soak

import (
	"context"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// sample is one read of the site Orthanc's DICOMweb server entries.
type sample struct {
	start, at time.Time // request sent, answer read
	// valid[i]: store i had a managed entry whose token had not expired at at.
	valid []bool
	// expiry[i] is the entry's TokenExpiry ("" without a managed entry);
	// fp[i] its token's fingerprint.
	expiry, fp []string
	err        string
}

// sampleLoop reads the entries every SamplePeriod until ctx ends.
func (r *runner) sampleLoop(ctx context.Context) {
	stores := r.s.Stores()
	t := time.NewTicker(SamplePeriod)
	defer t.Stop()
	for {
		sm := r.takeSample(ctx, stores)
		if ctx.Err() != nil {
			return // a read cut short by the end is not a sample
		}
		r.mu.Lock()
		r.samples = append(r.samples, sm)
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) takeSample(ctx context.Context, stores []stack.Store) sample {
	sm := sample{start: time.Now(), valid: make([]bool, len(stores)), expiry: make([]string, len(stores)), fp: make([]string, len(stores))}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, servers, err := stack.Servers(cctx, r.s.Site)
	sm.at = time.Now()
	if err != nil {
		sm.err = redact(err.Error())
		return sm
	}
	for i, st := range stores {
		e, ok := servers[st.Name]
		if !ok {
			continue
		}
		marker, _ := e[orthanc.MarkerProperty].(string)
		exp, _ := e[orthanc.ExpiryProperty].(string)
		if marker != r.s.AgentID {
			continue
		}
		sm.expiry[i] = exp
		sm.fp[i], _ = e[orthanc.TokenProperty].(string)
		if t, err := time.Parse(time.RFC3339, exp); err == nil && sm.at.Before(t) {
			sm.valid[i] = true
		}
	}
	return sm
}

// gap is a stretch during which a store had no valid token in Orthanc.
type gap struct {
	store    string
	from, to time.Time
	length   time.Duration // to-from minus Orthanc's own restart time
	ongoing  bool          // still open at the last sample
	reason   string        // what the first invalid sample saw
}

// gaps computes every store's gaps from the samples (doc.go): a gap runs
// from its first invalid sample to the next valid one; samples that
// overlap a site Orthanc restart neither start nor end one, and the
// restart's time inside a gap is not counted.
func gaps(samples []sample, stores []string, down []interval) []gap {
	excluded := func(sm sample) bool {
		for _, iv := range down {
			if iv.overlaps(sm.start, sm.at) {
				return true
			}
		}
		return false
	}
	var out []gap
	for i, name := range stores {
		var cur *gap
		closeAt := func(t time.Time, ongoing bool) {
			cur.to, cur.ongoing = t, ongoing
			cur.length = t.Sub(cur.from)
			for _, iv := range down {
				lo, hi := later(iv.from, cur.from), earlier(iv.to, t)
				if hi.After(lo) {
					cur.length -= hi.Sub(lo)
				}
			}
			out = append(out, *cur)
			cur = nil
		}
		var last time.Time
		for _, sm := range samples {
			if excluded(sm) {
				continue
			}
			last = sm.at
			switch {
			case sm.err == "" && sm.valid[i]:
				if cur != nil {
					closeAt(sm.at, false)
				}
			case cur == nil:
				why := "no entry of the agent's"
				switch {
				case sm.err != "":
					why = "Orthanc did not answer: " + sm.err
				case sm.expiry[i] != "":
					why = "entry's token expired at " + sm.expiry[i]
				}
				cur = &gap{store: name, from: sm.at, reason: why}
			}
		}
		if cur != nil {
			closeAt(last, true)
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
