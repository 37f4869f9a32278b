//go:build cluster

package cluster

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// BenchmarkProxy measures whichever service proxy the lab cluster runs
// (hack/cluster/compare.sh runs it with kube-proxy, then with sluice) on
// the same workloads, and writes the figures (name value, a line each) to
// $CLUSTER_COMPARE_OUT for the comparison table:
//   - TCP connects/s from a Pod to a ClusterIP, at 1 and 8 in flight;
//   - connects/s from the external client to a NodePort;
//   - DNS queries/s through kube-dns (UDP, a new socket per query, as a
//     stub resolver makes them), and straight to the CoreDNS Pods (each
//     connects and DNS row the median of stormsPerRow runs);
//   - seconds from `kubectl scale` to every new Pod answering through the
//     ClusterIP;
//   - the proxy's memory (RSS) and CPU time per node over the run.
func BenchmarkProxy(b *testing.B) {
	proxy := os.Getenv("CLUSTER_PROXY")
	if proxy == "" {
		b.Fatal("CLUSTER_PROXY (sluice or kube-proxy) names the proxy being measured")
	}
	res := map[string]float64{}
	before := proxyUsage(b, proxy)
	t0 := time.Now()

	client, clientCg := benchClient(b)
	vip := benchBackends(b, "bench-backend", 30200)
	// From a process in the client Pod's own namespace and cgroup, as
	// the Pod's own connects are made.
	fromPod := func(addr string, n, c int) (agenttest.StormStats, error) {
		return agenttest.ConnectStormFrom(client, clientCg, addr, n, c)
	}
	for _, c := range []int{1, 8} {
		s, err := medianStorm(b, fromPod, vip+":80", 4000*c/2+4000, c)
		if err != nil {
			b.Fatalf("ClusterIP storm c=%d: %v", c, err)
		}
		res[fmt.Sprintf("clusterip_connects_per_s_c%d", c)] = s.Rate
		b.Logf("ClusterIP c=%d: %.0f connects/s, p50 %s p99 %s max %s, %d of a second or more", c, s.Rate, s.P50, s.P99, s.Max, s.Slow)
	}
	ext, err := netlab.OpenNS(lab["CLUSTER_EXT_NS"])
	if err != nil {
		b.Fatal(err)
	}
	defer ext.Close()
	fromExt := func(addr string, n, c int) (agenttest.StormStats, error) {
		return agenttest.ConnectStorm(ext.Do, addr, n, c)
	}
	s, err := medianStorm(b, fromExt, nodeIPs()[0]+":30200", 8000, 8)
	if err != nil {
		b.Fatalf("NodePort storm: %v", err)
	}
	res["nodeport_connects_per_s_c8"] = s.Rate
	b.Logf("NodePort c=8: %.0f connects/s, p50 %s p99 %s max %s, %d of a second or more", s.Rate, s.P50, s.P99, s.Max, s.Slow)

	const qname = "kubernetes.default.svc.cluster.local."
	qps, lost, err := medianDNS(b, client, []string{lab["CLUSTER_DNS_IP"] + ":53"}, qname)
	if err != nil {
		b.Fatalf("DNS: %v", err)
	}
	res["dns_queries_per_s_c8"] = qps
	res["dns_unanswered_percent"] = lost
	b.Logf("DNS through kube-dns, c=8: %.0f queries/s, %.2f%% unanswered within 1 s", qps, lost)
	// The same queries to the CoreDNS Pods themselves, no Service in the
	// way: the loss no proxy causes (CoreDNS's or the node's own).
	var direct []string
	for _, ip := range strings.Fields(jsonpath(b, "pods -n kube-system -l k8s-app=kube-dns", "{.items[*].status.podIP}")) {
		direct = append(direct, ip+":53")
	}
	qps, lost, err = medianDNS(b, client, direct, qname)
	if err != nil {
		b.Fatalf("DNS to the CoreDNS Pods: %v", err)
	}
	res["dns_direct_queries_per_s_c8"] = qps
	res["dns_direct_unanswered_percent"] = lost
	b.Logf("DNS to the CoreDNS Pods %v directly, c=8: %.0f queries/s, %.2f%% unanswered within 1 s", direct, qps, lost)

	res["scale_to_traffic_s"] = scaleToTraffic(b, client, vip)

	wall := time.Since(t0).Seconds()
	after := proxyUsage(b, proxy)
	for node, u := range after {
		res["rss_mib_"+node] = u.rssMiB
		res["cpu_percent_"+node] = 100 * (u.cpuSeconds - before[node].cpuSeconds) / wall
	}
	if out := os.Getenv("CLUSTER_COMPARE_OUT"); out != "" {
		var lines []string
		for k, v := range res {
			lines = append(lines, fmt.Sprintf("%s %.2f", k, v))
		}
		slices.Sort(lines)
		if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for k, v := range res {
		b.ReportMetric(v, k)
	}
}

// benchClient is a tools Pod on the first node: its network namespace,
// which the benchmark's own sockets enter, and its cgroup, where the
// connect storms' process is born (a proxy may act at a Pod's connect, as
// sluice's socket programs do on the node's cgroup subtree).
func benchClient(b *testing.B) (*netlab.NS, *netlab.Cgroup) {
	mustKubectl(b, "run", "bench-client", "--image=sluice.local/tools:1", "--restart=Never",
		`--overrides={"spec":{"nodeName":"`+nodes()[0]+`"}}`)
	b.Cleanup(func() { kubectl("delete", "pod/bench-client", "--wait=true") })
	mustKubectl(b, "wait", "--for=condition=Ready", "pod/bench-client", "--timeout=120s")
	ip, _ := kubectl("get", "pod/bench-client", "-o", "jsonpath={.status.podIP}")
	ns, err := podNS(strings.TrimSpace(ip))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Close)
	cg, err := podCgroup(ns)
	if err != nil {
		b.Fatal(err)
	}
	return ns, cg
}

// podCgroup is the cgroup v2 directory, under the lab's mount, of a
// process of the Pod whose network namespace is ns.
func podCgroup(ns *netlab.NS) (*netlab.Cgroup, error) {
	var want unix.Stat_t
	if err := unix.Stat("/run/netns/"+ns.Name, &want); err != nil {
		return nil, err
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		cgf, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(p)), "cgroup"))
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(cgf), "\n") {
			if rel, ok := strings.CutPrefix(line, "0::"); ok {
				return &netlab.Cgroup{Path: filepath.Join(lab["CLUSTER_CGROUP2"], rel)}, nil
			}
		}
	}
	return nil, fmt.Errorf("no process in the network namespace %s", ns.Name)
}

// benchBackends is faults_test.go's backends: a whoami Deployment, a Pod
// on each node, behind a NodePort; it returns the ClusterIP.
func benchBackends(b *testing.B, name string, nodePort int) string {
	backends(b, name, nodePort)
	return jsonpath(b, "service/"+name, "{.spec.clusterIP}")
}

// scaleToTraffic scales a one-replica Deployment to four and returns the
// seconds until each new Pod has answered a request through the ClusterIP.
func scaleToTraffic(b *testing.B, client *netlab.NS, _ string) float64 {
	vip := benchBackendsN(b, "bench-scale", 30201, 1)
	old := strings.Fields(mustKubectl(b, "get", "pods", "-l", "app=bench-scale", "-o", "jsonpath={.items[*].metadata.name}"))
	t0 := time.Now()
	mustKubectl(b, "scale", "deployment/bench-scale", "--replicas=4")
	seen := map[string]bool{}
	for _, o := range old {
		seen[o] = true
	}
	for len(seen) < 4 {
		if time.Since(t0) > 3*time.Minute {
			b.Fatalf("after 3 minutes only %d of 4 Pods answered through %s", len(seen), vip)
		}
		var name string
		err := client.Do(func() error {
			c, err := net.DialTimeout("tcp", vip+":80", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
			buf := make([]byte, 4096)
			n, _ := c.Read(buf)
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Hostname: "); ok {
					name = v
				}
			}
			return nil
		})
		if err == nil && name != "" {
			seen[name] = true
		}
	}
	took := time.Since(t0).Seconds()
	b.Logf("kubectl scale 1 -> 4: every new Pod answered through the ClusterIP after %.1fs", took)
	return took
}

func benchBackendsN(b *testing.B, name string, nodePort, replicas int) string {
	vip := benchBackends(b, name, nodePort)
	if replicas != 2 {
		mustKubectl(b, "scale", "deployment/"+name, "--replicas="+strconv.Itoa(replicas))
		mustKubectl(b, "rollout", "status", "deployment/"+name, "--timeout=120s")
		deadline := time.Now().Add(time.Minute)
		for {
			out, _ := kubectl("get", "pods", "-l", "app="+name, "-o", "name")
			if len(strings.Fields(out)) == replicas {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s did not scale to %d", name, replicas)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return vip
}

// dnsStorm sends A queries for name from conc workers for d, worker w to
// servers[w%len(servers)], each query from a new socket, and returns
// answered queries per second and the share, in percent, of queries not
// answered within a second (a stub resolver would retry them after its
// timeout).
func dnsStorm(ns *netlab.NS, servers []string, name string, conc int, d time.Duration) (qps, lostPercent float64, err error) {
	var answered, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns.Do(func() error {
				// Each worker its own query: its id is rewritten per
				// query, and a shared one would carry another worker's.
				q, buf := dnsQuery(name), make([]byte, 512)
				for id := uint16(w << 12); time.Now().Before(stop); id++ {
					c, err := net.Dial("udp", servers[w%len(servers)])
					if err != nil {
						failed.Add(1)
						continue
					}
					binary.BigEndian.PutUint16(q, id)
					c.SetDeadline(time.Now().Add(time.Second))
					_, err = c.Write(q)
					n := 0
					if err == nil {
						n, err = c.Read(buf)
					}
					c.Close()
					if err == nil && n > 12 && binary.BigEndian.Uint16(buf) == id && binary.BigEndian.Uint16(buf[6:]) > 0 {
						answered.Add(1)
					} else {
						failed.Add(1)
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	a, f := answered.Load(), failed.Load()
	if f > a {
		return 0, 0, fmt.Errorf("%d of %d queries unanswered", f, a+f)
	}
	return float64(a) / d.Seconds(), 100 * float64(f) / float64(a+f), nil
}

// dnsQuery is a recursive A query for name (a fully qualified name).
func dnsQuery(name string) []byte {
	q := []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// podNS is the network namespace (made by the nodes' CNI) holding ip.
func podNS(ip string) (*netlab.NS, error) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		out, err := run(5*time.Second, "nsenter", "--net=/run/netns/"+e.Name(), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err == nil && strings.Contains(out, " "+ip+"/") {
			return netlab.OpenNS(e.Name())
		}
	}
	return nil, fmt.Errorf("no pod network namespace holds %s", ip)
}

// stormsPerRow: a connects row is the median of this many storms. One
// storm lasts a second or two on a machine that also runs the cluster and
// its client, and single storms here run in two modes, 13,000-20,000
// connects/s at c=8 or 5,000-8,000, with either proxy and also straight to
// a Pod: the median of a few is steadier than any one.
const stormsPerRow = 5

// medianRun is the run of median rate of stormsPerRow runs; every run's
// rate is logged after what.
func medianRun[T any](b *testing.B, what string, run func() (T, error), rate func(T) float64) (T, error) {
	var runs []T
	for range stormsPerRow {
		r, err := run()
		if err != nil {
			return r, err
		}
		runs = append(runs, r)
	}
	rates := make([]string, len(runs))
	for i, r := range runs {
		rates[i] = fmt.Sprintf("%.0f", rate(r))
	}
	b.Logf("%s: %s/s", what, strings.Join(rates, ", "))
	slices.SortFunc(runs, func(x, y T) int { return cmp.Compare(rate(x), rate(y)) })
	return runs[len(runs)/2], nil
}

// medianStorm is the connect storm of median rate.
func medianStorm(b *testing.B, storm func(addr string, n, c int) (agenttest.StormStats, error), addr string, n, c int) (agenttest.StormStats, error) {
	return medianRun(b, fmt.Sprintf("%s c=%d: storms of %d connects", addr, c, n),
		func() (agenttest.StormStats, error) { return storm(addr, n, c) },
		func(s agenttest.StormStats) float64 { return s.Rate })
}

// medianDNS is the DNS storm of median rate, 2 s at c=8, and its
// unanswered share.
func medianDNS(b *testing.B, ns *netlab.NS, servers []string, name string) (qps, lostPercent float64, err error) {
	type dnsRun struct{ qps, lost float64 }
	m, err := medianRun(b, fmt.Sprintf("DNS to %v c=8: storms of 2 s", servers),
		func() (dnsRun, error) {
			q, l, err := dnsStorm(ns, servers, name, 8, 2*time.Second)
			return dnsRun{q, l}, err
		},
		func(r dnsRun) float64 { return r.qps })
	return m.qps, m.lost, err
}

type usage struct{ rssMiB, cpuSeconds float64 }

// proxyUsage is the proxy's RSS and CPU time on each node.
func proxyUsage(b *testing.B, proxy string) map[string]usage {
	u := map[string]usage{}
	for _, n := range nodes() {
		pid := proxyPid(b, proxy, n)
		u[n] = usage{rssMiB: float64(testenv.RSSKiB(b, pid)) / 1024, cpuSeconds: testenv.CPUSeconds(b, pid)}
	}
	return u
}

func proxyPid(b *testing.B, proxy, node string) int {
	if proxy == "kube-proxy" {
		raw, err := os.ReadFile(filepath.Join(lab["CLUSTER_RUN"], "kube-proxy-"+node+".pid"))
		if err != nil {
			b.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		return pid
	}
	// The sluice agent of node's DaemonSet Pod (runc gives containers
	// cgroups of their own, so it is found by its command line).
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmd, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if strings.HasPrefix(string(cmd), "/sluice\x00agent\x00") && strings.Contains(string(cmd), "--node-name="+node+"\x00") {
			pid, _ := strconv.Atoi(p.Name())
			return pid
		}
	}
	b.Fatalf("no sluice agent of %s", node)
	return 0
}
