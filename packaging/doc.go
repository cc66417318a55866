// Package packaging holds everything that ships the agent: the Debian package
// (nfpm.yaml, build-deb.sh, the maintainer scripts, the systemd unit in
// systemd/, the example agent.json, the Prometheus alerting rules
// orthanc-gcp-agent.rules.yml with their promtool tests, package-test.sh
// that installs it for real), the agent's container image check
// (agent-image-check.sh, on the base mkbase.sh builds, with the checks
// imagelib.sh shares with the broker's deploy/image-check.sh) and
// docker-compose.yml with its checks (compose-check.sh, the composecheck
// module and the tests here that hold the compose file to what this project
// promises, and the rules to the metrics the agent exports).
package packaging
