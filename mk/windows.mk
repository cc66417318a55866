# Windows. windows-check builds, vets and compiles the agent for Windows.
# windows-test runs it, in make test and CI: Debian bookworm's wine 8.0
# cannot start Go 1.26 Windows binaries (bcryptprimitives.dll), trixie's
# wine 10.0 can, headless. scripts/wine-root.sh makes a trixie minbase root
# with wine64 and wine (debootstrap from scripts/install-deps.sh; cached in
# /var/cache/orthanc-gcp-broker/roots/wine-trixie like the Orthanc roots;
# 1.2 GB, 7 min cold on a loaded 2-core machine; one build at a time, so
# .ci/run starts it in the background early) and scripts/windows-test.sh
# runs, under that wine with chroot, as root:
#   - every agent package's tests (./cmd/agent/... ./agent/... ./internal/...,
#     18 packages, all passing) as GOOS=windows test binaries, from the
#     package directory, umask 077 (wine derives a new file's DACL from its
#     Unix mode);
#   - agent.exe keygen and once against the real stack on loopback (broker,
#     Google fakes, a Linux Orthanc: testbed/wintest), checking the entry
#     reaches Orthanc.
# Wine keeps a file's DACL only as Unix mode bits (SYSTEM, the owner,
# Everyone): the ACL checks are tested on security descriptors there, and on
# files with Everyone's entries; entries for other trustees run on files
# only where the file system keeps them (real Windows).
# Not run: the Windows service manager path (wine runs services in session 1
# and lacks ChangeServiceConfig2W level 5; the svc.Handler is driven with
# fake channels instead), the event log, TBS (TPM), real NTFS inheritance.
# See docs/agent.md "Install on Windows".

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
