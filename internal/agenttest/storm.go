package agenttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// StormStats is one measured run of TCP connects.
type StormStats struct {
	Rate     float64 // connects per second
	P50, P99 time.Duration
	// Max, and Slow: the connects that took a second or more (a SYN
	// lost somewhere and retransmitted), which stall a worker while the
	// percentiles stay low.
	Max  time.Duration
	Slow int
}

// ConnectStorm opens n TCP connections to addr with the given concurrency,
// each closed with SO_LINGER 0 (an RST: no TIME_WAIT, so ports are not
// exhausted), and times every connect. Each worker runs inside within (a
// namespace's Do, for a worker thread switched into it).
func ConnectStorm(within func(func() error) error, addr string, n, concurrency int) (StormStats, error) {
	lat := make([]time.Duration, n)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
	)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := within(func() error {
				for i := range next {
					t0 := time.Now()
					conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
					lat[i] = time.Since(t0)
					if err != nil {
						return fmt.Errorf("connect %d: %w", i, err)
					}
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				firstEr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstEr != nil {
		return StormStats{}, firstEr
	}
	slices.Sort(lat)
	firstSlow, _ := slices.BinarySearch(lat, time.Second)
	return StormStats{Rate: float64(n) / elapsed.Seconds(), P50: lat[n/2], P99: lat[n*99/100], Max: lat[n-1], Slow: n - firstSlow}, nil
}

// storm is the asker's `storm ADDR N CONCURRENCY`: a ConnectStorm from
// this process, its figures on stdout.
func storm(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "storm: want ADDR N CONCURRENCY")
		return 2
	}
	n, err1 := strconv.Atoi(args[1])
	conc, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "storm: bad N or CONCURRENCY")
		return 2
	}
	s, err := ConnectStorm(func(f func() error) error { return f() }, args[0], n, conc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%f %d %d %d %d\n", s.Rate, s.P50, s.P99, s.Max, s.Slow)
	return 0
}

// ConnectStormFrom runs a ConnectStorm from a new process in ns, born in
// the cgroup cg: a host-network client's storm.
func ConnectStormFrom(ns *netlab.NS, cg *netlab.Cgroup, addr string, n, concurrency int) (StormStats, error) {
	self, err := os.Executable()
	if err != nil {
		return StormStats{}, err
	}
	cmd := exec.Command(self, "storm", addr, strconv.Itoa(n), strconv.Itoa(concurrency))
	cmd.Env = append(os.Environ(), RunAsAsker+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := ns.StartInCgroup(cg, cmd); err != nil {
		return StormStats{}, err
	}
	if err := cmd.Wait(); err != nil {
		return StormStats{}, fmt.Errorf("storm %s from %s: %w: %s", addr, ns.Name, err, strings.TrimSpace(errb.String()))
	}
	var s StormStats
	var p50, p99, maxNs int64
	if _, err := fmt.Sscan(out.String(), &s.Rate, &p50, &p99, &maxNs, &s.Slow); err != nil {
		return StormStats{}, fmt.Errorf("storm output %q: %w", out.String(), err)
	}
	s.P50, s.P99, s.Max = time.Duration(p50), time.Duration(p99), time.Duration(maxNs)
	return s, nil
}
