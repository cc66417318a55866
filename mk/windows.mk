# Windows. windows-check builds, vets and compiles the agent for Windows.
# windows-test runs it: Debian bookworm's wine 8.0 cannot start Go 1.26
# Windows binaries (bcryptprimitives.dll), trixie's wine 10.0 can, headless.
# scripts/wine-root.sh makes a trixie minbase root with wine64 and wine
# (debootstrap, cached in /var/cache/orthanc-gcp-broker/roots/wine-trixie
# like the Orthanc roots; about 2 minutes and 1 GB cold) and
# scripts/windows-test.sh runs, under that wine with chroot, as root:
#   - every agent package's tests (./cmd/agent/... ./agent/... ./internal/...)
#     as GOOS=windows test binaries, from the package directory, umask 077;
#   - agent.exe keygen and once against the real stack on loopback (broker,
#     Google fakes, a Linux Orthanc: testbed/wintest), checking the entry
#     reaches Orthanc.
# Not run: the Windows service manager path (wine runs services in session 1
# and lacks ChangeServiceConfig2W level 5), the event log, TBS (TPM).
# See docs/agent.md "Install on Windows".
#
# Not yet in `make test` or CI: under wine, 14 of the 18 agent packages pass
# and agent.exe keygen/once reach a real Orthanc through the real broker, but
# agent/migrate (Unix modes and C:/Z: paths in its tests),
# internal/agentkey TestFileACLWindows and agent/config
# TestPasswordFileACLWindows (an ACL set with SetNamedSecurityInfo is not
# read back under wine) still fail, and internal/atomicfile's newest test has
# not been re-run there.

.PHONY: windows-check windows-test

## windows-check: GOOS=windows builds, vets and compiles the tests of the agent
windows-check:
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/agent
	GOOS=windows GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/agent
	GOOS=windows GOARCH=amd64 $(GO) build ./agent/... ./internal/...
	GOOS=windows GOARCH=amd64 $(GO) vet ./cmd/agent/... ./agent/... ./internal/...
	GOOS=windows GOARCH=amd64 $(GO) test -count=1 -exec /bin/true ./cmd/agent/... ./internal/agentkey/... ./agent/config/...

## windows-test: runs the agent's tests and agent.exe keygen/once under trixie's wine (root, cached)
windows-test:
	GO=$(GO) scripts/windows-test.sh
