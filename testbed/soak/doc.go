// Package soak runs the whole system (testbed/stack: the Google fakes, the
// broker and agent processes, a site Orthanc and a cloud Orthanc behind the
// token-checking DICOMweb front) for a long while under continuous load and
// a seeded timeline of faults, and judges the result (`make soak`).
//
// # Load
//
// One call loop, round-robin over the stores, repeats a cycle through the
// real site Orthanc's DICOMweb client: STOW (a fresh one-instance study from
// testbed/dicomgen is uploaded to the site, POST
// /dicom-web/servers/NAME/stow, then the study must be in the cloud
// Orthanc), QIDO (POST …/NAME/qido must return the study) and WADO (the
// study is deleted on the site, POST …/NAME/retrieve, then it must be back
// on the site). Each of the three is one "call"; QIDO and WADO are made only
// after their STOW succeeded. The loop pauses CallPause between cycles.
//
// STOW and retrieve run as asynchronous Orthanc jobs ("Synchronous": false)
// that the soak waits for itself (testbed/stack StowWait, RetrieveWait):
// DICOMweb 1.7's synchronous mode polls its job every 100 ms and takes a
// job still Pending (the jobs engine had not started it yet, as happens on
// a loaded machine) for a failure, and Orthanc then drops the request
// without an answer (the client reads EOF) while the job goes on and
// succeeds. That made a call fail with no fault anywhere near it (seed
// 676358756, measured here under load); it is Orthanc's client wrapper,
// not the system under soak.
//
// # Short tokens
//
// The Stores (16) get tokens of TokenLifetime (80 s) plus LifetimeStep (2 s)
// per store, 80 s for store-a up to 110 s for store-p, and the agent
// refreshes them RefreshMargin (35 s, plus up to 10 % jitter) before they
// expire: each store gets a new token every 43-75 s, one every 3.5 s on
// average and about 165 in all in 10 minutes, 50 in 3 (the run needs 100
// and 30). The agent's lead
// (35-38.5 s) stays under half the shortest lifetime (40 s), the part of its
// life below which the broker's cache no longer hands a token out, so every
// refresh really mints a new token. A token rotation is a push, during the
// run, of a token the store's entry did not have before, counted from the
// agent's "pushed token to Orthanc" log lines by fingerprint (the first push
// of each store is not a rotation).
//
// # Spread refreshes
//
// The stack starts every store at once, so left alone all refreshes would
// come in one burst every 43 s. Before the run starts (not counted in it),
// the soak gives store i's next token i times 1.7 s of extra life (a
// per-principal lifetime of the fake token endpoint), restarts the broker
// (empty cache) and the agent, which fetches every token anew, and sets the
// stores' own lifetimes: from then on the stores refresh one after the
// other, about every 3.7 s, and stores that a fault made refresh together
// drift apart again by 2 s a cycle per store of difference. The run starts
// 5 s before the first refresh is due.
//
// # Faults
//
// Plan lays every fault of the run on one seeded timeline (see Plan): every
// kind occurs at least once whatever the duration (at least MinDuration, 3
// minutes), active phases never overlap, and the end of every slot is
// quiet. Before a fault starts the executor waits (at most to the fault's
// Latest) until the agent reports every store ok with no error, so one
// fault's recovery does not add to the next fault; broker kills and token
// endpoint faults then wait for the next refresh the agent has scheduled
// and start 0.3 s before it, so they always meet a real token request.
//
// Why no store should ever run out of token: a refresh is first tried with
// at least RefreshMargin (35 s) of the token left. From a failed attempt the
// agent retries after 0.5-1, 1-2, 2-4, 4-8 and 8-16 s (its backoff with
// jitter), so an outage that ends within 15.5 s of the first failure is over
// by the fifth retry, at most 31 s after it, which is less than 35 s. No
// planned fault keeps token requests failing longer than that, counting the
// broker's 5 s hold-off after a failed mint (during which it answers with
// that failure): a broker kill is down at most 6 s (plus its start), a 5xx
// burst is lifted within 8 s (13 s with the hold-off), slow answers add at
// most 12 s in all and each stays under the agent's 10 s broker timeout, and
// a Secret Manager outage lasts at most 10 s (15 s with the hold-off). Such
// an outage costs tokens only while the broker has no secret to fall back on
// for a store: after a broker restart (empty cache) or a key rotation (the
// refused old key makes it drop the cached one), until the store's next
// mint; otherwise it serves its last secret value. An agent restart is down
// at most 5 s with the tokens left in Orthanc, and a key rotation costs no
// token by itself (the broker re-reads a rotated key when Google refuses the
// old one, or at its next refresh). One exception to the 35 s: a restarted
// agent may be handed cached tokens with just over half their life left,
// and it then refreshes no sooner than half of that, so for one refresh
// such a store has about 20 s of slack; Plan never puts a fault that costs
// tokens right after an agent restart.
//
// # What counts as unavoidable
//
// A failed call is unavoidable, and reported apart, only when
//
//  1. it overlapped a restart of the site Orthanc: its run (from sending the
//     first request to the last answer) intersects the interval from the
//     moment the soak asks Orthanc to stop until Orthanc answers GET /system
//     again. Orthanc itself was down, nothing else could have made it work.
//  2. or it started within RepushGrace (CheckInterval + 1 s) after such a
//     restart ended and failed because the site Orthanc did not know the
//     DICOMweb server: QIDO answered 404 "Inexistent server: NAME", or the
//     STOW or retrieve job ended in Failure with FunctionErrorCode 7,
//     "Inexistent server: NAME" (a synchronous job answers 500; then its
//     failed job is found in GET /jobs?expand, each job attributed to one
//     call only). Orthanc forgets REST-created server entries
//     when it restarts (FACTS.md, ServersInDatabase false), and the agent by
//     design re-creates them within CheckInterval. A call in that window
//     failing any other way is not excused.
//
// Every other failed call fails the run.
//
// # Longest without a valid token
//
// A sampler reads the site Orthanc's entries (GET /dicom-web/servers?expand)
// every SamplePeriod. A store is without a valid token at a sample when its
// entry is missing, is not the agent's, or its TokenExpiry is not after the
// sample's time; a sample that Orthanc does not answer counts as without a
// token for every store. Time inside Orthanc's own restarts (rule 1 above)
// is not counted: Orthanc has no entries while it is down. A gap runs from
// its first invalid sample to the next valid one. The run fails if the
// longest gap exceeds GapBound (3 s): after a site Orthanc restart the agent
// needs up to CheckInterval (1 s) to see that the entries are gone and a few
// milliseconds to push them, and the sampler adds up to one SamplePeriod
// (0.2 s) at each end; every other fault must cost no gap at all (above).
//
// The run also fails if a token value appears in any log (broker, agent,
// both Orthancs, the fakes, the front and the tap) or in what the soak
// prints: the soak reports fingerprints only, and redacts anything shaped
// like a token from error messages.
//
// # What a failure shows
//
// At the end the soak prints (Result.Text) the fault timeline, each
// unavoidable failure in one line with its rule, and every avoidable
// failure in full, so a CI failure can be diagnosed from its output alone:
//
//   - the call (cycle, operation, store), its start and end as offsets from
//     the start of the run and as UTC times, and its error;
//   - every hop: the site Orthanc's answer (HTTP status and body, or the
//     transport error), the site Orthanc's failed DICOMweb job of the
//     call's kind created while it ran (its ErrorCode and Content, which
//     holds FunctionErrorCode and FunctionErrorDetails: what Orthanc met at
//     the cloud), and every request the fake Healthcare front answered for
//     the store while the call ran (method, path, HTTP status, time taken,
//     the bearer token's fingerprint);
//   - the agent's /healthz view of the store read just after the failure;
//   - the faults active while the call ran or ended in the minute before
//     it, with their times and how long before the call they ended, and
//     the site Orthanc's down intervals;
//   - the store's entry in the site Orthanc in the samples from just
//     before the call to just after it (valid or not, token fingerprint,
//     expiry);
//   - the lines of each log from 10 s before the call to 2 s after it (at
//     most 40 per log, the last ones): the agent's lines about the store,
//     its warnings and errors and its connection events; the broker's
//     lines about the store and its warnings and errors; every request the
//     agent sent through the broker tap with its status (0: the broker was
//     down and the connection was dropped); the Google fakes' lines (grants
//     refused, secret reads refused, the front's refusals); both
//     Orthancs' lines (lines that could hold a credential withheld).
//
// # Logs
//
// Every log of the run is kept in one directory, named on the last line
// the soak prints ("logs: DIR"): agent.log, broker.log, tap.log (agent to
// broker requests), fakes.log (the Google fakes), front.log (one line per
// request the fake Healthcare front answered), orthanc-site.log,
// orthanc-cloud.log, soak.log (the progress lines) and report.txt (what the
// soak printed at the end). With Config.LogDir (SOAK_LOGS, --logs) it is a
// new directory soak-SEED-TIME there, kept whatever the verdict; without,
// a temporary directory (orthanc-gcp-soak-SEED-TIME-*) kept only when the
// run fails. The stack's other files (keys, Orthanc storage) are removed.
package soak
