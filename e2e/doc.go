// Package e2e holds the end-to-end tests: the real broker and agent
// binaries, two real Orthanc servers (the site, and the "cloud" behind the
// fake Healthcare DICOMweb front) and the Google fakes, started by
// testbed/stack. Traffic goes through Orthanc's own DICOMweb client, as at
// a site. Run with: go test ./e2e/ (about two minutes; needs the Debian
// packages orthanc and orthanc-dicomweb, and fails without them).
package e2e
