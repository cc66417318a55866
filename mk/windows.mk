# Windows: the agent is build-tested only. Debian bookworm's wine 8.0 cannot
# start Go 1.26 Windows binaries (bcryptprimitives.dll missing), so nothing
# here runs agent.exe; the portable logic under the service and ACL code is
# unit-tested on Linux.

.PHONY: windows-check

## windows-check: GOOS=windows builds, vets and compiles the tests of the agent
windows-check:
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/agent
	GOOS=windows GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/agent
	GOOS=windows GOARCH=amd64 $(GO) build ./agent/... ./internal/...
	GOOS=windows GOARCH=amd64 $(GO) vet ./cmd/agent/... ./agent/... ./internal/...
	GOOS=windows GOARCH=amd64 $(GO) test -count=1 -exec /bin/true ./cmd/agent/... ./internal/agentkey/... ./agent/config/...
