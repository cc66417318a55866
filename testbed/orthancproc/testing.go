package orthancproc

// TB is the part of testing.TB that StartForTest needs; *testing.T and
// *testing.B satisfy it. (An interface keeps "testing" out of this normal
// package.)
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// StartForTest starts an instance for a test and stops it when the test ends.
// It fails the test (never skips) with Available's message when Orthanc is
// not installed. An empty opts.Dir becomes t.TempDir(), so the log stays
// readable until the test ends; when the test failed, the end of the log is
// written to the test output (lines that could hold credentials withheld).
func StartForTest(t TB, opts Options) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("%v", err)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	inst, err := Start(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("orthancproc: %s is %s (%s)", opts.Name, inst.Versions(), binaryPath)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("orthancproc: last lines of %s:\n%s", inst.LogPath, inst.logTail(40))
		}
		if err := inst.Stop(); err != nil {
			t.Logf("orthancproc: stop %s: %v", inst.opts.Name, err)
		}
	})
	return inst
}
