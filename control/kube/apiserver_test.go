package kube

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/kubetest"
)

// The source against a real kube-apiserver: selectors applied by the
// server, protobuf, what the server adds (managedFields), an API server
// restart.
func TestRealAPIServer(t *testing.T) {
	a := kubetest.Start(t)
	admin := a.AdminClient()
	c, cancelCtx := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelCtx()

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// The API server creates its own Service a moment after it serves;
	// the source's first list must find it.
	if err := wait.PollUntilContextTimeout(c, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := admin.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the API server's default/kubernetes Service: %v", err)
	}
	must(admin.CoreV1().Namespaces().Create(c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}))
	web, err := admin.CoreV1().Services("demo").Create(c, service("demo", "web", "", "", nil, 80), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	proxied := map[string]string{control.LabelServiceProxyName: "other"}
	must(admin.CoreV1().Services("demo").Create(c, service("demo", "proxied", "", "", proxied, 80), metav1.CreateOptions{}))
	es := endpointSlice("demo", "web-1", "web", "", nil, 8080, "10.244.1.2", "10.244.2.2")
	heavyMeta(&es.ObjectMeta)
	es.ManagedFields = nil // the server keeps its own
	must(admin.DiscoveryV1().EndpointSlices("demo").Create(c, es, metav1.CreateOptions{}))
	must(admin.DiscoveryV1().EndpointSlices("demo").Create(c, endpointSlice("demo", "proxied-1", "proxied", "", proxied, 8080, "10.244.3.2"), metav1.CreateOptions{}))
	a.CreateNode(t, nodeName, "192.168.0.10", "zone-1")
	a.CreateNode(t, "node-b", "192.168.0.11", "zone-2")

	cfg, err := RESTConfig(a.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec, logs := newRecorder(t), newLogRecorder()
	src := New(client, nodeName, slog.New(logs))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, rec) }()
	defer func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	}()

	rec.waitCall(t, "Synced")
	rec.mu.Lock()
	gotSvcs, gotSlices := slices.Sorted(maps.Keys(rec.services)), slices.Sorted(maps.Keys(rec.slices))
	node := rec.node
	webSlice := rec.slices["demo/web-1"]
	rec.mu.Unlock()
	// default/kubernetes is the API server's own (without endpoints here).
	if want := []string{"default/kubernetes", "demo/web"}; !slices.Equal(gotSvcs, want) {
		t.Errorf("Services %v, want %v", gotSvcs, want)
	}
	if want := []string{"demo/web-1"}; !slices.Equal(gotSlices, want) {
		t.Errorf("EndpointSlices %v, want %v", gotSlices, want)
	}
	if want := (control.NodeInfo{Name: nodeName, Zone: "zone-1", InternalIPs: "192.168.0.10"}); node != want {
		t.Errorf("node %+v, want %+v", node, want)
	}
	if webSlice != nil {
		if want := map[string]string{corev1.EndpointsLastChangeTriggerTime: triggerTime}; webSlice.ManagedFields != nil || !maps.Equal(webSlice.Annotations, want) {
			t.Errorf("slice from the server: managedFields %v, annotations %v; want none, %v", webSlice.ManagedFields, webSlice.Annotations, want)
		}
	}

	svcs, ess, n := rec.objects()
	state, _ := control.Desired(svcs, ess, n)
	fe := control.Frontend{Addr: netip.MustParseAddr(web.Spec.ClusterIP), Port: 80, Proto: control.TCP}
	var backends []string
	if sp := state.Ports[fe]; sp != nil {
		for _, b := range sp.Backends {
			backends = append(backends, b.String())
		}
	}
	if want := []string{"10.244.1.2:8080", "10.244.2.2:8080"}; !slices.Equal(backends, want) {
		t.Errorf("frontend %s: backends %v, want %v", fe, backends, want)
	}

	// A slice that takes the headless label leaves the server's watch.
	cur, err := admin.DiscoveryV1().EndpointSlices("demo").Get(c, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Labels[control.LabelHeadless] = ""
	must(admin.DiscoveryV1().EndpointSlices("demo").Update(c, cur, metav1.UpdateOptions{}))
	rec.waitCall(t, "DeleteSlice demo/web-1")

	// Another node's change is not seen; this node's zone is.
	for _, change := range []struct{ name, zone string }{{"node-b", "zone-9"}, {nodeName, "zone-3"}} {
		nd, err := admin.CoreV1().Nodes().Get(c, change.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nd.Labels[corev1.LabelTopologyZone] = change.zone
		must(admin.CoreV1().Nodes().Update(c, nd, metav1.UpdateOptions{}))
	}
	rec.waitCall(t, "SetNode node-a zone=zone-3 ips=192.168.0.10")
	for _, call := range rec.snapshot() {
		if strings.Contains(call, "node-b") || strings.Contains(call, "proxied") {
			t.Errorf("sink got %q", call)
		}
	}

	// The node's pod CIDR, set once in its spec, and a new InternalIP
	// through the status subresource, as the kubelet writes it.
	nd, err := admin.CoreV1().Nodes().Get(c, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nd.Spec.PodCIDR, nd.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
	if nd, err = admin.CoreV1().Nodes().Update(c, nd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	nd.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.20"}, {Type: corev1.NodeHostName, Address: nodeName}}
	must(admin.CoreV1().Nodes().UpdateStatus(c, nd, metav1.UpdateOptions{}))
	wantNode := control.NodeInfo{Name: nodeName, Zone: "zone-3", InternalIPs: "192.168.0.20", PodCIDRs: "10.244.1.0/24"}
	rec.waitFor(t, "the pod CIDR and the new InternalIP", func() bool { return rec.node == wantNode })

	// A LoadBalancer's ingress, written by a cloud controller to the
	// status subresource, reaches the sink.
	if web, err = admin.CoreV1().Services("demo").Get(c, "web", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	web.Spec.Type = corev1.ServiceTypeLoadBalancer
	if web, err = admin.CoreV1().Services("demo").Update(c, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	web.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	must(admin.CoreV1().Services("demo").UpdateStatus(c, web, metav1.UpdateOptions{}))
	rec.waitFor(t, "the load balancer's ingress", func() bool {
		s := rec.services["demo/web"]
		return s != nil && len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].IP == "203.0.113.7"
	})

	// The API server goes away and comes back: Run goes on, the watches
	// reconnect and changes made meanwhile arrive.
	a.StopAPIServer()
	logs.waitFor(t, "a watch error while the API server is down", func(r logRecord) bool {
		return r.level == slog.LevelWarn && r.attrs["err"] != ""
	})
	a.StartAPIServer()
	must(a.AdminClient().CoreV1().Services("demo").Create(c, service("demo", "after", "", "", nil, 80), metav1.CreateOptions{}))
	rec.waitFor(t, "the Service created after the restart", func() bool { return rec.services["demo/after"] != nil })
	logs.waitFor(t, "the watches back", func(r logRecord) bool { return r.msg == "watching the API server again" })
	for _, r := range logs.find(func(r logRecord) bool { return r.level >= slog.LevelInfo }) {
		t.Logf("%v %s %v", r.level, r.msg, r.attrs)
	}
	select {
	case err := <-errc:
		t.Fatalf("Run returned %v during the API server restart", err)
	default:
	}
}
