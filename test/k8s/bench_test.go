package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/kubetest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

const (
	benchServices  = 10000
	benchEndpoints = 10
	benchChanges   = 200
	benchNS        = "bench"
)

// 10.100.0.0/16 is inside the API server's 10.96.0.0/12.
func benchVIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}) }

func benchBackend(n int) netip.Addr {
	v := 128<<24 + n // 128.0.0.0 upward: never contacted
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func benchSlice(i int, addrs ...netip.Addr) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-1", i), Namespace: benchNS,
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()}})
	}
	return es
}

func benchService(i int, vip netip.Addr) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: benchNS},
		Spec: corev1.ServiceSpec{ClusterIP: vip.String(),
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

// parallel runs f(0..n-1) on w workers, failing b on the first error.
func parallel(b *testing.B, n, w int, f func(i int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, w)
	next := make(chan int)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkK8sControlPlane is the agent against a real API server holding
// 10,000 Services of 10 endpoints each (one EndpointSlice each), as the
// kube-proxy reference was measured: the first sync after the informers
// synced, RSS, and EndpointSlice changes from the API call returning to the
// entry readable in the BPF map, with --min-sync-period=0.
//
//	go test -run '^$' -bench K8s -benchtime 1x ./test/k8s/ -timeout 30m
func BenchmarkK8sControlPlane(b *testing.B) {
	api := kubetest.Start(b)
	admin := api.AdminClient()
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	cfg := api.AdminConfig()
	cfg.QPS, cfg.Burst = 5000, 5000
	fast, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	load := time.Now()
	parallel(b, benchServices, 32, func(i int) error {
		if _, err := fast.CoreV1().Services(benchNS).Create(ctx, benchService(i, benchVIP(i)), metav1.CreateOptions{}); err != nil {
			return err
		}
		addrs := make([]netip.Addr, benchEndpoints)
		for e := range addrs {
			addrs[e] = benchBackend(i*benchEndpoints + e)
		}
		_, err := fast.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, benchSlice(i, addrs...), metav1.CreateOptions{})
		return err
	})
	b.Logf("created %d Services and EndpointSlices in %s", benchServices, time.Since(load))

	n := newNode(b, api, 1)
	n.startAgent(true)
	first := n.metric("sluice_sync_full_proxy_rules_duration_seconds_sum")
	rss := testenv.RSSKiB(b, n.agent.Pid())

	dp, closeMaps, err := loader.OpenPinnedMaps(n.pinDir)
	if err != nil {
		b.Fatal(err)
	}
	defer closeMaps()
	if got := countFrontends(dp); got < benchServices {
		b.Fatalf("%d frontends programmed, want %d", got, benchServices)
	}

	// EndpointSlice changes: service i's first endpoint moves.
	cpu0 := testenv.CPUSeconds(b, n.agent.Pid())
	var lat []time.Duration
	for c := range benchChanges {
		i := (c * 37) % benchServices
		moved := netip.AddrFrom4([4]byte{11, 200, byte(c >> 8), byte(c)})
		addrs := []netip.Addr{moved}
		for e := 1; e < benchEndpoints; e++ {
			addrs = append(addrs, benchBackend(i*benchEndpoints+e))
		}
		es := benchSlice(i, addrs...)
		cur, err := fast.DiscoveryV1().EndpointSlices(benchNS).Get(ctx, es.Name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		es.ResourceVersion = cur.ResourceVersion
		if _, err := fast.DiscoveryV1().EndpointSlices(benchNS).Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		returned := time.Now()
		for !slices.Contains(dp.LB4.BackendAddrs(benchVIP(i), 80, 6), moved) {
			if time.Since(returned) > 10*time.Second {
				b.Fatalf("change %d never reached the map", c)
			}
			time.Sleep(50 * time.Microsecond)
		}
		lat = append(lat, time.Since(returned))
	}
	cpu := testenv.CPUSeconds(b, n.agent.Pid()) - cpu0
	slices.Sort(lat)

	// A new Service, reachable through its ClusterIP.
	newVIP := netip.MustParseAddr("10.101.0.1")
	created := time.Now()
	if _, err := fast.CoreV1().Services(benchNS).Create(ctx, benchService(benchServices, newVIP), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := fast.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, benchSlice(benchServices, netlab.BackendAddr(1)), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// A connection tried before the frontend exists waits out its SYN's
	// timeout: try once the map has the backend, then until it answers.
	for !slices.Contains(dp.LB4.BackendAddrs(newVIP, 80, 6), netlab.BackendAddr(1)) {
		if time.Since(created) > 10*time.Second {
			b.Fatal("the new Service was never programmed")
		}
		time.Sleep(50 * time.Microsecond)
	}
	for {
		if who, err := n.ask("tcp", newVIP.String()+":80"); err == nil && who == "backend-1" {
			break
		}
		if time.Since(created) > 10*time.Second {
			b.Fatal("the new Service never answered")
		}
	}
	reachable := time.Since(created)

	b.ReportMetric(first*1000, "first-sync-ms")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(ms(lat[len(lat)/2]), "change-p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "change-p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "change-max-ms")
	b.ReportMetric(cpu*1000/benchChanges, "cpu-s/1000-changes")
	b.ReportMetric(ms(reachable), "new-service-reachable-ms")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func countFrontends(dp *maps.Datapath) int {
	n := 0
	dp.LB4.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
		if k.BackendSlot == 0 && v.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER == 0 {
			n++
		}
		return true
	})
	return n
}
