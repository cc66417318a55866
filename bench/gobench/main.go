// Command gobench copies `go test -bench` output from stdin into a section
// of BENCHMARKS.md together with the command that produced it:
//
//	go test -run='^$' -bench=. ./broker/agentauth | go run ./bench/gobench -section agentauth -cmd "…" -out BENCHMARKS.md
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/bench/report"
)

func main() {
	section := flag.String("section", "", "section name in BENCHMARKS.md")
	title := flag.String("title", "", "section title")
	cmd := flag.String("cmd", "", "the command whose output is on stdin")
	out := flag.String("out", "BENCHMARKS.md", "file to update")
	flag.Parse()
	if *section == "" || *cmd == "" {
		log.Fatal("gobench: -section and -cmd are required")
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(in), "\n") {
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "cpu:") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		log.Fatalf("gobench: no benchmark lines on stdin:\n%s", in)
	}
	os.Stdout.Write(in)
	body := fmt.Sprintf("## %s\n\nCommand: `%s`, %s, %s.\n\n```\n%s\n```\n", *title, *cmd, runtime.Version(), time.Now().UTC().Format("2006-01-02"), strings.Join(lines, "\n"))
	if err := report.WriteSection(*out, *section, body); err != nil {
		log.Fatal(err)
	}
}
