//go:build !windows

package main

// serviceSupported: "agent service" registers a Windows service; elsewhere
// the systemd unit does that job.
const serviceSupported = false

func isWindowsService() bool { return false }

func serviceMain([]string) int { return exitFailure }

func (c *cli) installService(string) int { return exitUsage }

func (c *cli) uninstallService() int { return exitUsage }
