//go:build linux

package policysrc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// fakeGCSEnv makes the test binary serve a directory's files as objects
// of bucket "fleet" under "policy/" instead of running tests: the fake
// Cloud Storage of BenchmarkReloadGCS, in its own process so that its CPU
// (encoding 40,001 objects per listing) is not counted as the client's.
const fakeGCSEnv = "POLICYSRC_BENCH_FAKE_GCS_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakeGCSEnv); dir != "" {
		if err := serveFakeGCS(dir, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveFakeGCS prints the server's URL, then for each line read (a file
// name) writes that file again as a new generation and prints "ok"; it
// stops at the end of its input.
func serveFakeGCS(dir string, in io.Reader, out io.Writer) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	object := func(name string) (fakestorage.Object, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		return fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "fleet", Name: "policy/" + name, ContentType: "application/json"}, Content: data}, err
	}
	var objs []fakestorage.Object
	for _, e := range entries {
		o, err := object(e.Name())
		if err != nil {
			return err
		}
		objs = append(objs, o)
	}
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1", Writer: io.Discard, InitialObjects: objs})
	if err != nil {
		return err
	}
	defer srv.Stop()
	fmt.Fprintln(out, srv.URL())
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		o, err := object(sc.Text())
		if err != nil {
			return err
		}
		srv.CreateObject(o)
		fmt.Fprintln(out, "ok")
	}
	return sc.Err()
}

// fakeGCSProcess starts serveFakeGCS in a child process, on CPU 0 when
// taskset is there (run the benchmark itself with taskset -c 1).
func fakeGCSProcess(b *testing.B, dir string) (url string, put func(name string)) {
	args := []string{os.Args[0], "-test.run=^$"}
	if _, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), fakeGCSEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	r := bufio.NewReader(stdout)
	line, err := r.ReadString('\n')
	if err != nil {
		b.Fatalf("fake Cloud Storage: %v", err)
	}
	return strings.TrimSpace(line), func(name string) {
		fmt.Fprintln(stdin, name)
		if ok, err := r.ReadString('\n'); err != nil || ok != "ok\n" {
			b.Fatalf("fake Cloud Storage put %s: %q %v", name, ok, err)
		}
	}
}

// BenchmarkReloadGCS: the broker's side of a gs:// re-read (one listing
// of every object with the attributes the code asks for; for "changed",
// one agent's object replaced by a new generation, read and parsed), the
// fake Cloud Storage in another process. cpu-ms/op is this process's CPU.
// page=0 is the client's default page size (1,000 objects, the JSON
// API's maximum); page=5000 shows what fewer, larger pages would buy
// against a server that allowed them.
func BenchmarkReloadGCS(b *testing.B) {
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			f := makeFleet(b, n)
			dir := b.TempDir()
			for k, v := range f.files {
				if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
					b.Fatal(err)
				}
			}
			url, put := fakeGCSProcess(b, dir)
			ctx := context.Background()
			c, err := NewStorageClient(ctx, url)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for _, page := range []int{0, 5000} {
				for _, changed := range []bool{false, true} {
					name := map[bool]string{false: "unchanged", true: "one-agent-changed"}[changed]
					b.Run(fmt.Sprintf("%s/page=%d", name, page), func(b *testing.B) {
						l := NewFragmentLoader(&GCS{Client: func(context.Context) (*storage.Client, error) { return c, nil }, Bucket: "fleet", Prefix: "policy/", PageSize: page})
						if _, err := l.Load(ctx); err != nil {
							b.Fatal(err)
						}
						var cpu time.Duration
						v := 0
						for b.Loop() {
							if changed {
								b.StopTimer()
								v++
								i := v % n
								fn := fmt.Sprintf("agent-site%05d.json", i)
								if err := os.WriteFile(filepath.Join(dir, fn), agentJSON(i, f.keys[i], []string{fmt.Sprintf("site%05d-store%d", i, v%3)}), 0o600); err != nil {
									b.Fatal(err)
								}
								put(fn)
								b.StartTimer()
							}
							c0 := cpuTime()
							p, err := l.Load(ctx)
							if err != nil || (p == nil) == changed {
								b.Fatalf("reload: %v %v", p, err)
							}
							cpu += cpuTime() - c0
						}
						b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
					})
				}
			}
		})
	}
}
