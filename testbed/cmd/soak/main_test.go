package main

import (
	"io"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseArgs(t *testing.T) {
	o, err := parseArgs(nil, env(nil), io.Discard)
	if err != nil || o.duration != 10*time.Minute {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	o, err = parseArgs(nil, env(map[string]string{"SOAK_DURATION": "3m", "SOAK_SEED": "42"}), io.Discard)
	if err != nil || o.duration != 3*time.Minute || o.seed != 42 {
		t.Fatalf("from the environment: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"--duration", "4m", "--seed", "7"}, env(map[string]string{"SOAK_DURATION": "3m"}), io.Discard)
	if err != nil || o.duration != 4*time.Minute || o.seed != 7 {
		t.Fatalf("flags over the environment: %+v, %v", o, err)
	}
	o, err = parseArgs(nil, env(map[string]string{"SOAK_LOGS": "/var/tmp/soak"}), io.Discard)
	if err != nil || o.logs != "/var/tmp/soak" {
		t.Fatalf("SOAK_LOGS: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"--logs", "/tmp/x"}, env(map[string]string{"SOAK_LOGS": "/var/tmp/soak"}), io.Discard)
	if err != nil || o.logs != "/tmp/x" {
		t.Fatalf("--logs over SOAK_LOGS: %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{"--duration", "soon"}, {"--duration", "1m"}, {"--seed", "-1"}, {"--seed", "x"}, {"--bin", t.TempDir()}, {"extra"},
	} {
		if _, err := parseArgs(bad, env(nil), io.Discard); err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
}
