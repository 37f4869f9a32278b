package test

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
)

const (
	benchServices    = 10000
	benchEndpoints   = 10
	servicesPerFile  = 100
	benchFirstBackIP = 128 << 24 // 128.0.0.0 upward: one address per endpoint
)

func benchVIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}) }

func benchBackend(n int) netip.Addr {
	v := benchFirstBackIP + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchFile writes services [first, first+servicesPerFile) and their slices;
// endpoint 0 of service `first` gets address override when valid.
func benchFile(first int, override netip.Addr) string {
	var b strings.Builder
	for i := first; i < first+servicesPerFile; i++ {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: bench}\nspec: {clusterIP: %s, ports: [{name: http, port: 80}]}\n", i, benchVIP(i))
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: svc-%d-1, namespace: bench, labels: {kubernetes.io/service-name: svc-%d}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n", i, i)
		for e := range benchEndpoints {
			addr := benchBackend(i*benchEndpoints + e)
			if i == first && e == 0 && override.IsValid() {
				addr = override
			}
			fmt.Fprintf(&b, "- {addresses: [%s]}\n", addr)
		}
	}
	return b.String()
}

var syncRe = regexp.MustCompile(`msg=synced .* written=([0-9]+) .*took=([0-9.]+[µmn]?s)`)

// syncLine is one "synced" log line: frontends written, time taken.
type syncLine struct {
	written int
	took    time.Duration
}

// BenchmarkControlPlane runs the agent on 10,000 services of 10 endpoints
// each: the time from files read to everything programmed, the time from
// one file changing to its change being in the maps, and the agent's RSS.
func BenchmarkControlPlane(b *testing.B) {
	testenv.Privileged(b)
	dir := b.TempDir()
	for f := 0; f < benchServices/servicesPerFile; f++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("svc-%03d.yaml", f)), []byte(benchFile(f*servicesPerFile, netip.Addr{})), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ns, err := netlab.NewNS(fmt.Sprintf("slbc-%d", os.Getpid()))
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Delete()
	pinDir := filepath.Join(loader.DefaultBPFFS, fmt.Sprintf("sluice-bench-%d", os.Getpid()))
	defer loader.Uninstall(pinDir, nil)
	logPath := filepath.Join(b.TempDir(), "agent.log")
	logf, _ := os.Create(logPath)
	defer logf.Close()
	self, _ := os.Executable()
	cmd := exec.Command(self, "agent", "--manifests", dir, "--pin-dir", pinDir, "--node-name", "bench", "--min-sync-period", "0",
		"--cgroup-root=") // never this machine's root cgroup
	cmd.Env = append(os.Environ(), runAsSluice+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := ns.Start(cmd); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	syncs := func() []syncLine {
		f, _ := os.Open(logPath)
		defer f.Close()
		var out []syncLine
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if m := syncRe.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[1])
				d, _ := time.ParseDuration(m[2])
				out = append(out, syncLine{n, d})
			}
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(syncs()) == 0 {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			b.Fatalf("agent never synced:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	initial := syncs()[0].took
	startToSynced := time.Since(start)
	rssAfterSync := testenv.RSSKiB(b, cmd.Process.Pid)

	dp, closeMaps, err := loader.OpenPinnedMaps(pinDir)
	if err != nil {
		b.Fatal(err)
	}
	defer closeMaps()
	var frontends int
	dp.LB4.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
		if k.BackendSlot == 0 && v.Flags == 0 {
			frontends++
		}
		return true
	})
	if frontends != benchServices {
		b.Fatalf("%d frontends programmed, want %d", frontends, benchServices)
	}

	// One file changes: service 0's first endpoint moves to a new address.
	moved := netip.MustParseAddr("127.200.0.1")
	changed := filepath.Join(dir, "svc-000.yaml")
	tmp := filepath.Join(dir, ".svc-000.tmp")
	if err := os.WriteFile(tmp, []byte(benchFile(0, moved)), 0o644); err != nil {
		b.Fatal(err)
	}
	written := time.Now()
	if err := os.Rename(tmp, changed); err != nil {
		b.Fatal(err)
	}
	for !slices.Contains(dp.LB4.BackendAddrs(benchVIP(0), 80, 6), moved) {
		if time.Since(written) > 10*time.Second {
			b.Fatal("the changed file was never applied")
		}
		time.Sleep(time.Millisecond)
	}
	changeVisible := time.Since(written)
	// The change's own sync is the one that wrote a frontend; every sync
	// since the initial one, together, wrote exactly one.
	var change syncLine
	for {
		writes := 0
		for _, l := range syncs()[1:] {
			writes += l.written
			if l.written > 0 {
				change = l
			}
		}
		if writes > 1 {
			b.Fatalf("one changed endpoint wrote %d frontends, want 1", writes)
		}
		if writes == 1 {
			break
		}
		if time.Since(written) > 10*time.Second {
			b.Fatal("the change's sync was never logged")
		}
		time.Sleep(time.Millisecond)
	}
	rssAfterChange := testenv.RSSKiB(b, cmd.Process.Pid)

	b.ReportMetric(float64(initial.Milliseconds()), "initial-sync-ms")
	b.ReportMetric(float64(startToSynced.Milliseconds()), "start-to-synced-ms")
	b.ReportMetric(float64(change.took.Microseconds())/1000, "change-apply-ms")
	b.ReportMetric(float64(changeVisible.Microseconds())/1000, "write-to-map-ms")
	b.ReportMetric(float64(rssAfterSync)/1024, "rss-MiB")
	b.ReportMetric(float64(rssAfterChange)/1024, "rss-after-change-MiB")
}
