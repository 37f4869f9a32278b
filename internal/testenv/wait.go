package testenv

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// WaitFor polls cond until it returns nil, failing t with cond's last
// error once the (scaled) timeout has passed.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	timeout = Scaled(timeout)
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RSSKiB is a process's resident set size.
func RSSKiB(t testing.TB, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// CPUSeconds is the time a process's threads have spent on a CPU: the sum
// of their schedstat run times, which the scheduler keeps in nanoseconds.
// The user and system times of /proc/PID/stat are sampled at the tick
// (4 ms at 250 Hz), each tick charged whole to whoever is on the CPU: a
// proxy that wakes for well under a tick at a time is charged by luck, tens
// of percent either way over a minute. The sum leaves out threads that
// have exited (Go's rarely do); without schedstat, the stat times.
func CPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	if ns, ok := runNanoseconds(pid); ok {
		return float64(ns) / 1e9
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

// runNanoseconds sums the first field of /proc/PID/task/*/schedstat.
func runNanoseconds(pid int) (uint64, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, false
	}
	var sum uint64
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return 0, false
		}
		ns, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += ns
	}
	return sum, sum > 0
}
