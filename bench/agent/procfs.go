package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// memory is what /proc/PID/status says about a process's resident memory,
// in kB (the kernel's kB are KiB). RSS splits into anonymous pages (heap,
// stacks: the process's own) and file pages (the mapped binary: shared and
// reclaimable).
type memory struct {
	RSSkB, HWMkB   int64
	AnonkB, FilekB int64
}

// parseStatus reads VmRSS, VmHWM, RssAnon and RssFile from the text of
// /proc/PID/status; the last two are optional (Linux >= 4.5).
func parseStatus(data []byte) (memory, error) {
	var m memory
	var haveRSS, haveHWM bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM" && key != "RssAnon" && key != "RssFile") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return memory{}, fmt.Errorf("procfs: unexpected %s line %q", key, sc.Text())
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("procfs: %s: %w", key, err)
		}
		switch key {
		case "VmRSS":
			m.RSSkB, haveRSS = v, true
		case "VmHWM":
			m.HWMkB, haveHWM = v, true
		case "RssAnon":
			m.AnonkB = v
		case "RssFile":
			m.FilekB = v
		}
	}
	if !haveRSS || !haveHWM {
		return memory{}, fmt.Errorf("procfs: status has no VmRSS/VmHWM (kernel thread or exited process?)")
	}
	return m, nil
}

// readMemory reads /proc/pid/status.
func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseStatus(data)
}

// parseStatTicks returns utime+stime (fields 14 and 15, in clock ticks) from
// the text of /proc/PID/stat. The command name (field 2) is in parentheses
// and may itself hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseStatTicks(data []byte) (int64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("procfs: stat has no command name")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("procfs: stat has %d fields after the command name, want at least 13", len(f))
	}
	var sum int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("procfs: stat utime/stime: %w", err)
		}
		sum += v
	}
	return sum, nil
}

// readCPUTicks reads utime+stime of pid from /proc/pid/stat.
func readCPUTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(data)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times. Go has no
// sysconf without cgo, so ask getconf; Linux fixes USER_HZ at 100 for
// /proc on every architecture Go supports, which is the fallback.
func clockTick() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// linkage says whether an ELF file is statically linked: it is dynamic
// exactly when it asks for a program interpreter (the dynamic loader).
func linkage(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "dynamic", nil
		}
	}
	return "static", nil
}
