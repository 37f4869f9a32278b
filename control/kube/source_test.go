package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluice-lb/sluice/control"
)

const (
	nodeName = "node-a"
	// The selector of rule 1, spelled out rather than built from the
	// constants the code uses.
	rule1Selector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
)

// startSource starts a Source on api and returns the sink it feeds and its log.
// The source is stopped at the end of the test, and must then return nil.
func startSource(t *testing.T, api *fakeAPI) (*recorder, *logRecorder, func()) {
	t.Helper()
	return startSourceWith(t, api, newRecorder(t))
}

// startSourceWith is startSource with a recorder of the caller's.
func startSourceWith(t *testing.T, api *fakeAPI, rec *recorder) (*recorder, *logRecorder, func()) {
	t.Helper()
	logs := newLogRecorder()
	src := New(api, nodeName, slog.New(logs))
	src.waitLogEvery = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, rec) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return rec, logs, stop
}

func service(ns, name, rv, clusterIP string, labels map[string]string, ports ...int32) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv, Labels: labels},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP},
	}
	if clusterIP != "" { // else the API server allocates one
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p, Protocol: corev1.ProtocolTCP})
	}
	return s
}

func endpointSlice(ns, name, svc, rv string, labels map[string]string, port int32, addrs ...string) *discoveryv1.EndpointSlice {
	l := map[string]string{discoveryv1.LabelServiceName: svc}
	for k, v := range labels {
		l[k] = v
	}
	portName, proto := "", corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv, Labels: l},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return es
}

func node(name, rv, zone string, internalIPs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: rv, Labels: map[string]string{
		corev1.LabelHostname: name,
	}}}
	if zone != "" {
		n.Labels[corev1.LabelTopologyZone] = zone
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for _, ip := range internalIPs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	return n
}

var ctx = context.Background()

// The fake clientset's own handling of selectors, which fakeAPI makes up
// for: if this test starts failing, client-go changed it.
func TestFakeClientsetSelectors(t *testing.T) {
	hidden := service("ns", "hidden", "1", "10.96.0.1", map[string]string{control.LabelHeadless: ""})
	cs := fake.NewClientset(service("ns", "a", "1", "10.96.0.2", nil), hidden, node("node-a", "1", ""), node("node-b", "1", ""))

	l, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{LabelSelector: rule1Selector})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Name != "a" {
		t.Errorf("fake List with a label selector returned %d Services, want only ns/a (the fake applies label selectors to lists)", len(l.Items))
	}
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(nl.Items) != 2 {
		t.Errorf("fake List with a field selector returned %d Nodes; it used to ignore field selectors (2)", len(nl.Items))
	}

	w, err := cs.CoreV1().Services("").Watch(ctx, metav1.ListOptions{LabelSelector: rule1Selector, ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	h2 := hidden.DeepCopy()
	h2.Name = "hidden-2"
	if _, err := cs.CoreV1().Services("ns").Create(ctx, h2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if s, ok := ev.Object.(*corev1.Service); !ok || s.Name != "hidden-2" {
			t.Errorf("watch sent %v %T, want the hidden Service", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the fake watch filtered a Service its label selector excludes; it used not to")
	}
}

func TestInitialListThenSynced(t *testing.T) {
	const n = 200
	var objs []runtime.Object
	for i := range n {
		objs = append(objs,
			service("ns", fmt.Sprintf("s%d", i), "1", fmt.Sprintf("10.96.%d.%d", i/250, 1+i%250), nil, 80),
			endpointSlice("ns", fmt.Sprintf("s%d-x", i), fmt.Sprintf("s%d", i), "1", nil, 8080, "10.244.0.1"))
	}
	objs = append(objs, node(nodeName, "1", "zone-1", "192.168.0.10"))
	// A sink slower than the informers' caches: their HasSynced comes
	// long before the handlers have delivered the list.
	rec := newRecorder(t)
	rec.slow = 50 * time.Microsecond
	startSourceWith(t, newFakeAPI(t, objs...), rec)

	synced := rec.waitCall(t, "Synced")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.atSync.services != n || rec.atSync.slices != n {
		t.Errorf("at Synced the sink had %d Services and %d EndpointSlices, want %d of each", rec.atSync.services, rec.atSync.slices, n)
	}
	setNode := slices.Index(rec.calls, "SetNode node-a zone=zone-1 ips=192.168.0.10")
	if setNode < 0 || setNode > synced {
		t.Errorf("SetNode at call %d, Synced at %d: want the node before Synced", setNode, synced)
	}
	for i, c := range rec.calls {
		if strings.HasPrefix(c, "SetNode") && i != setNode {
			t.Errorf("second SetNode call %q (node unchanged)", c)
		}
	}
}

func TestSelectorsSent(t *testing.T) {
	api := newFakeAPI(t)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)
	// The watches start after the lists.
	waitWatches(t, api, "services", "endpointslices", "nodes")
	lists, watches := api.requests()
	want := map[string]request{
		"services":       {"services", rule1Selector, ""},
		"endpointslices": {"endpointslices", rule1Selector, ""},
		"nodes":          {"nodes", "", "metadata.name=" + nodeName},
	}
	for name, reqs := range map[string][]request{"list": lists, "watch": watches} {
		seen := map[string]bool{}
		for _, r := range reqs {
			w, ok := want[r.resource]
			if !ok {
				t.Errorf("%s of unexpected resource %q", name, r.resource)
				continue
			}
			seen[r.resource] = true
			if r != w {
				t.Errorf("%s %s with label selector %q, field selector %q; want %q, %q", name, r.resource, r.labelSelector, r.fieldSelector, w.labelSelector, w.fieldSelector)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("%s requests for %v, want services, endpointslices and nodes", name, seen)
		}
	}
}

func TestHiddenObjectsInvisible(t *testing.T) {
	proxied := map[string]string{control.LabelServiceProxyName: "other-proxy"}
	headless := map[string]string{control.LabelHeadless: ""}
	api := newFakeAPI(t,
		service("ns", "visible", "1", "10.96.0.1", nil, 80),
		service("ns", "proxied", "1", "10.96.0.2", proxied, 80),
		service("ns", "headless", "1", "10.96.0.3", headless, 80),
		endpointSlice("ns", "visible-x", "visible", "1", nil, 8080, "10.244.0.1"),
		endpointSlice("ns", "proxied-x", "proxied", "1", proxied, 8080, "10.244.0.2"),
		endpointSlice("ns", "headless-x", "headless", "1", headless, 8080, "10.244.0.3"),
		node(nodeName, "1", ""), node("node-b", "1", "zone-b", "192.168.0.11"),
	)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)

	// Created later: a hidden one, then a visible one on the same watch,
	// so the hidden one would have come first.
	mustCreate(t, api, service("ns", "proxied-2", "2", "10.96.0.4", proxied, 80))
	mustCreate(t, api, service("ns", "later", "3", "10.96.0.5", nil, 80))
	mustCreate(t, api, endpointSlice("ns", "proxied-2-x", "proxied-2", "2", proxied, 8080, "10.244.0.4"))
	mustCreate(t, api, endpointSlice("ns", "later-x", "later", "3", nil, 8080, "10.244.0.5"))
	rec.waitCall(t, "UpsertService ns/later rv=3")
	rec.waitCall(t, "UpsertSlice ns/later-x rv=3")

	// A visible Service that takes the headless label leaves the watch.
	s := service("ns", "visible", "4", "10.96.0.1", headless, 80)
	if _, err := api.CoreV1().Services("ns").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "DeleteService ns/visible")

	for _, c := range rec.snapshot() {
		if strings.Contains(c, "proxied") || strings.Contains(c, "headless") || strings.Contains(c, "node-b") {
			t.Errorf("sink got %q, an object the selectors hide", c)
		}
	}
}

// waitSynced waits for Synced, and for the watches that follow the lists:
// the fake keeps no history, so a change made before its watch starts
// would be lost (a real API server replays it from the list's resource
// version). It returns the index of the Synced call.
func waitSynced(t *testing.T, rec *recorder, api *fakeAPI) int {
	t.Helper()
	i := rec.waitCall(t, "Synced")
	waitWatches(t, api, "services", "endpointslices", "nodes")
	return i
}

// waitWatches waits until api has had a watch request for every resource.
func waitWatches(t *testing.T, api *fakeAPI, resources ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, watches := api.requests()
		missing := slices.DeleteFunc(slices.Clone(resources), func(res string) bool {
			return slices.ContainsFunc(watches, func(r request) bool { return r.resource == res })
		})
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no watch of %v", missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustCreate(t *testing.T, api *fakeAPI, o runtime.Object) {
	t.Helper()
	var err error
	switch o := o.(type) {
	case *corev1.Service:
		_, err = api.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discoveryv1.EndpointSlice:
		_, err = api.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Node:
		_, err = api.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
	default:
		t.Fatalf("mustCreate %T", o)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestServiceAddUpdateDelete(t *testing.T) {
	api := newFakeAPI(t, service("ns", "a", "1", "10.96.0.1", nil, 80))
	rec, _, _ := startSource(t, api)
	rec.waitCall(t, "UpsertService ns/a rv=1")
	waitSynced(t, rec, api)

	mustCreate(t, api, service("ns", "b", "2", "10.96.0.2", nil, 80))
	rec.waitCall(t, "UpsertService ns/b rv=2")

	if _, err := api.CoreV1().Services("ns").Update(ctx, service("ns", "a", "3", "10.96.0.1", nil, 80, 443), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "UpsertService ns/a rv=3")
	rec.mu.Lock()
	if got := len(rec.services["ns/a"].Spec.Ports); got != 2 {
		t.Errorf("updated Service has %d ports, want 2", got)
	}
	rec.mu.Unlock()

	if err := api.CoreV1().Services("ns").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "DeleteService ns/b")
}

func TestEndpointSliceAddUpdateDelete(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("ns", "a-1", "a", "1", nil, 8080, "10.244.0.1"))
	rec, _, _ := startSource(t, api)
	rec.waitCall(t, "UpsertSlice ns/a-1 rv=1")
	waitSynced(t, rec, api)

	mustCreate(t, api, endpointSlice("ns", "a-2", "a", "2", nil, 8080, "10.244.0.2"))
	rec.waitCall(t, "UpsertSlice ns/a-2 rv=2")

	es := endpointSlice("ns", "a-1", "a", "3", nil, 8080, "10.244.0.1", "10.244.0.3")
	if _, err := api.DiscoveryV1().EndpointSlices("ns").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "UpsertSlice ns/a-1 rv=3")
	rec.mu.Lock()
	if got := len(rec.slices["ns/a-1"].Endpoints); got != 2 {
		t.Errorf("updated EndpointSlice has %d endpoints, want 2", got)
	}
	rec.mu.Unlock()

	if err := api.DiscoveryV1().EndpointSlices("ns").Delete(ctx, "a-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "DeleteSlice ns/a-2")
}

func TestUnchangedResourceVersionSkipped(t *testing.T) {
	api := newFakeAPI(t, service("ns", "a", "1", "10.96.0.1", nil, 80))
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)

	// An update carrying the resource version the cache already has (a
	// relist's copy) must not reach the sink; the next real one must.
	same := service("ns", "a", "1", "10.96.0.1", map[string]string{"step": "same-rv"}, 80)
	if _, err := api.CoreV1().Services("ns").Update(ctx, same, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CoreV1().Services("ns").Update(ctx, service("ns", "a", "2", "10.96.0.1", nil, 80), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "UpsertService ns/a rv=2")
	if got := rec.count("UpsertService ns/a rv=1"); got != 1 {
		t.Errorf("Service ns/a at resource version 1 delivered %d times, want once: %v", got, rec.snapshot())
	}
}

func TestTombstoneDeleteAfterRelist(t *testing.T) {
	api := newFakeAPI(t,
		service("ns", "a", "1", "10.96.0.1", nil, 80),
		service("ns", "b", "1", "10.96.0.2", nil, 80))
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)
	listsBefore, _ := api.requests()

	// The watch misses the delete; the relist after it expires notices
	// ns/a is gone and the informer hands a DeletedFinalStateUnknown.
	api.mute("services")
	if err := api.CoreV1().Services("ns").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	api.expireWatches(t, "services")
	rec.waitCall(t, "DeleteService ns/a")

	listsAfter, _ := api.requests()
	count := func(rs []request) int {
		return len(slices.DeleteFunc(slices.Clone(rs), func(r request) bool { return r.resource != "services" }))
	}
	if count(listsAfter) <= count(listsBefore) {
		t.Errorf("delete delivered without a relist: the muted watch leaked it")
	}
	if rec.count("DeleteService ns/b") != 0 || rec.count("UpsertService ns/b") != 1 {
		t.Errorf("relist disturbed the unchanged ns/b: %v", rec.snapshot())
	}
}

func TestNodeChanges(t *testing.T) {
	api := newFakeAPI(t, node(nodeName, "1", "zone-1", "192.168.0.10", "10.0.0.10"), node("node-b", "1", "zone-b", "192.168.0.11"))
	rec, _, _ := startSource(t, api)
	first := rec.waitCall(t, "SetNode node-a zone=zone-1 ips=192.168.0.10,10.0.0.10")
	waitSynced(t, rec, api)

	update := func(n *corev1.Node) {
		t.Helper()
		if _, err := api.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(node(nodeName, "2", "zone-2", "192.168.0.10", "10.0.0.10"))
	rec.waitCall(t, "SetNode node-a zone=zone-2 ips=192.168.0.10,10.0.0.10")

	// A new resource version that changes nothing the sink sees (a
	// heartbeat, another label) calls nothing.
	hb := node(nodeName, "3", "zone-2", "192.168.0.10", "10.0.0.10")
	hb.Labels["other"] = "x"
	hb.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	update(hb)
	update(node("node-b", "4", "zone-c", "192.168.0.12"))
	// The order of the addresses is the Node's.
	update(node(nodeName, "5", "zone-2", "10.0.0.10", "192.168.0.10"))
	last := rec.waitCall(t, "SetNode node-a zone=zone-2 ips=10.0.0.10,192.168.0.10")

	var setNodes []string
	for _, c := range rec.snapshot()[first : last+1] {
		if strings.HasPrefix(c, "SetNode") {
			setNodes = append(setNodes, c)
		}
	}
	if len(setNodes) != 3 {
		t.Errorf("SetNode calls %q, want one per change of zone or addresses (3)", setNodes)
	}

	if err := api.CoreV1().Nodes().Delete(ctx, nodeName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "SetNode node-a zone= ips=")
}

func TestMissingNode(t *testing.T) {
	api := newFakeAPI(t, node("node-b", "1", "zone-b", "192.168.0.11"))
	rec, _, _ := startSource(t, api)
	name := rec.waitCall(t, "SetNode node-a zone= ips=")
	if synced := waitSynced(t, rec, api); synced < name {
		t.Errorf("Synced (call %d) before the node name (call %d)", synced, name)
	}

	mustCreate(t, api, node(nodeName, "2", "zone-1", "192.168.0.10"))
	rec.waitCall(t, "SetNode node-a zone=zone-1 ips=192.168.0.10")
	if got := rec.count("SetNode"); got != 2 {
		t.Errorf("%d SetNode calls, want 2: %v", got, rec.snapshot())
	}
}

func TestUnreachableAPIServerWaits(t *testing.T) {
	api := newFakeAPI(t, service("ns", "a", "1", "10.96.0.1", nil, 80))
	api.failLists("services", errors.New("dial tcp 10.96.0.1:443: connect: connection refused"))
	rec, logs, stop := startSource(t, api)

	logs.waitFor(t, "the list error, logged", func(r logRecord) bool {
		return r.level == slog.LevelWarn && r.attrs["kind"] == "Service" && strings.Contains(r.attrs["err"], "connection refused")
	})
	logs.waitFor(t, "a waiting line with the reason", func(r logRecord) bool {
		return strings.HasPrefix(r.msg, "waiting for the first list") && r.attrs["kind"] == "Service" &&
			strings.Contains(r.attrs["reason"], "connection refused")
	})
	rec.mu.Lock()
	if rec.synced {
		t.Errorf("Synced while the Service list fails")
	}
	rec.mu.Unlock()

	api.failLists("services", nil)
	rec.waitCall(t, "UpsertService ns/a rv=1")
	waitSynced(t, rec, api)
	stop()
}

func TestCancelWhileWaitingReturnsNil(t *testing.T) {
	api := newFakeAPI(t)
	api.failLists("endpointslices", errors.New("connection refused"))
	rec, logs, stop := startSource(t, api)
	logs.waitFor(t, "the list error", func(r logRecord) bool { return r.attrs["kind"] == "EndpointSlice" })
	stop() // fails the test unless Run returns nil
	if rec.count("Synced") != 0 {
		t.Errorf("Synced although EndpointSlices never listed")
	}
}

// Events in, desired state out: what the source hands the sink is what
// control.Desired needs.
func TestDesiredFromEvents(t *testing.T) {
	api := newFakeAPI(t,
		service("ns", "web", "1", "10.96.0.10", nil, 80),
		endpointSlice("ns", "web-1", "web", "1", nil, 8080, "10.244.1.2", "10.244.2.2"),
		endpointSlice("ns", "web-2", "web", "1", nil, 8080, "10.244.3.2"),
		node(nodeName, "1", "zone-1", "192.168.0.10"),
	)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)

	fe := control.Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: control.TCP}
	backends := func() []string {
		svcs, ess, n := rec.objects()
		state, problems := control.Desired(svcs, ess, n)
		if len(problems) != 0 {
			t.Errorf("problems: %v", problems)
		}
		sp := state.Ports[fe]
		if sp == nil {
			return nil
		}
		var out []string
		for _, b := range sp.Backends {
			out = append(out, b.String())
		}
		return out
	}
	want := []string{"10.244.1.2:8080", "10.244.2.2:8080", "10.244.3.2:8080"}
	if got := backends(); !slices.Equal(got, want) {
		t.Fatalf("frontend %s: backends %v, want %v", fe, got, want)
	}

	if err := api.DiscoveryV1().EndpointSlices("ns").Delete(ctx, "web-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "DeleteSlice ns/web-2")
	if got, want := backends(), want[:2]; !slices.Equal(got, want) {
		t.Errorf("after a slice delete: backends %v, want %v", got, want)
	}
}

// A watch that cannot be re-established after the first list (the API
// server went away) is logged, and so is its return; the reflector
// retries such watches without calling its WatchErrorHandler.
func TestWatchFailureAfterSyncLogged(t *testing.T) {
	api := newFakeAPI(t, service("ns", "a", "1", "10.96.0.1", nil, 80))
	rec, logs, _ := startSource(t, api)
	waitSynced(t, rec, api)

	// Connection refused, as the reflector recognises it: the kind of
	// watch error it retries without telling anyone.
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	api.failWatches("services", refused)
	api.expireWatches(t, "services")
	logs.waitFor(t, "the failed watch, logged", func(r logRecord) bool {
		return r.level == slog.LevelWarn && r.attrs["kind"] == "Service" && strings.Contains(r.attrs["err"], "connection refused")
	})
	api.failWatches("services", nil)
	logs.waitFor(t, "the watch back", func(r logRecord) bool {
		return r.msg == "watching the API server again" && r.attrs["kind"] == "Service"
	})
	mustCreate(t, api, service("ns", "b", "2", "10.96.0.2", nil, 80))
	rec.waitCall(t, "UpsertService ns/b rv=2")
}
