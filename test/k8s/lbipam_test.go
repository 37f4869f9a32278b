package k8s

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/lbipam"
	"github.com/sluice-lb/sluice/internal/kubetest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

const lbNamespace = "lbipam"

// lbEnv is an API server with deploy/'s RBAC, a client with the agent's
// ServiceAccount token, and an admin client.
type lbEnv struct {
	t      *testing.T
	api    *kubetest.APIServer
	admin  kubernetes.Interface
	agent  kubernetes.Interface
	pool   lbipam.Pool
	events map[string]bool
}

func newLBEnv(t *testing.T, pool string) *lbEnv {
	api := kubetest.Start(t)
	if api == nil {
		return nil
	}
	api.ApplyFiles(t, repoFile(t, "deploy/rbac.yaml"))
	e := &lbEnv{t: t, api: api, admin: api.AdminClient(),
		agent: api.Client(t, api.ServiceAccountKubeconfig(t, "kube-system", "sluice"))}
	var err error
	if e.pool, err = lbipam.ParsePool(pool); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lbNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// controller runs one agent's RunController, with a fast election, until
// the returned stop is called (which releases the Lease).
func (e *lbEnv) controller(identity string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := lbipam.RunController(ctx, lbipam.ControllerOptions{Client: e.agent, Pool: e.pool,
			Identity: identity, Namespace: "kube-system",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond}); err != nil {
			e.t.Errorf("controller %s: %v", identity, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// createLB creates a Service of type LoadBalancer. Creation times have a
// resolution of a second, so Services made within one are ordered by name:
// the tests name them in the order they are made.
func (e *lbEnv) createLB(name string, mutate ...func(*corev1.Service)) {
	e.t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: lbNamespace, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	for _, m := range mutate {
		m(s)
	}
	if _, err := e.admin.CoreV1().Services(lbNamespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// ingress is the Service's status.loadBalancer.ingress, as "ip/mode"
// strings.
func (e *lbEnv) ingress(name string) ([]string, error) {
	s, err := e.admin.CoreV1().Services(lbNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		mode := "-"
		if in.IPMode != nil {
			mode = string(*in.IPMode)
		}
		out = append(out, in.IP+"/"+mode)
	}
	return out, nil
}

func (e *lbEnv) waitIngress(name string, want ...string) {
	e.t.Helper()
	testenv.WaitFor(e.t, fmt.Sprintf("%s's ingress %v", name, want), 30*time.Second, func() error {
		got, err := e.ingress(name)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("ingress %v", got)
		}
		return nil
	})
}

// waitEvent waits for an Event of reason on the Service whose message
// mentions substr.
func (e *lbEnv) waitEvent(name, reason, eventType string) corev1.Event {
	e.t.Helper()
	var found corev1.Event
	testenv.WaitFor(e.t, fmt.Sprintf("a %s Event %s on %s", eventType, reason, name), 30*time.Second, func() error {
		sel := fields.Set{"involvedObject.name": name, "reason": reason}.AsSelector().String()
		l, err := e.admin.CoreV1().Events(lbNamespace).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return err
		}
		for _, ev := range l.Items {
			if ev.Type == eventType {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("%d events of that reason, none of type %s", len(l.Items), eventType)
	})
	return found
}

func (e *lbEnv) leaseHolder() string {
	l, err := e.admin.CoordinationV1().Leases("kube-system").Get(context.Background(), lbipam.LeaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// The elected agent assigns pool addresses with only deploy/'s RBAC:
// oldest first, the pool's network and broadcast addresses skipped,
// spec.loadBalancerClass left alone; an exhausted pool is a Warning
// Event naming it, and the Service gets the address a deleted one frees;
// a Service no longer of type LoadBalancer gives its address back; of two
// agents one leads, and the next leader renumbers nothing.
func TestLBIPAMController(t *testing.T) {
	e := newLBEnv(t, "192.168.50.200/30") // .201 and .202
	if e == nil {
		return
	}
	stopA := e.controller("node-a")
	testenv.WaitFor(t, "node-a leading", 30*time.Second, func() error {
		if h := e.leaseHolder(); h != "node-a" {
			return fmt.Errorf("lease held by %q", h)
		}
		return nil
	})
	stopB := e.controller("node-b")
	e.createLB("first")
	e.createLB("second")
	e.createLB("other-class", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr("example.com/other") })
	e.createLB("third")
	e.waitIngress("first", "192.168.50.201/VIP")
	e.waitIngress("second", "192.168.50.202/VIP")
	ev := e.waitEvent("third", lbipam.ReasonExhausted, corev1.EventTypeWarning)
	if want := "no free address in pool 192.168.50.200/30 (2 addresses, all assigned)"; ev.Message != want {
		t.Errorf("exhaustion event %q, want %q", ev.Message, want)
	}
	if got, _ := e.ingress("third"); len(got) != 0 {
		t.Errorf("third has ingress %v in an exhausted pool", got)
	}
	if got, _ := e.ingress("other-class"); len(got) != 0 {
		t.Errorf("a Service of another loadBalancerClass got %v", got)
	}
	if h := e.leaseHolder(); h != "node-a" {
		t.Errorf("with two agents the lease is held by %q, want node-a still", h)
	}

	// The leader goes (releasing its Lease): node-b takes over and
	// renumbers nothing.
	stopA()
	testenv.WaitFor(t, "node-b leading", 30*time.Second, func() error {
		if h := e.leaseHolder(); h != "node-b" {
			return fmt.Errorf("lease held by %q", h)
		}
		return nil
	})
	// A change node-b must act on, to know it synced.
	if err := e.admin.CoreV1().Services(lbNamespace).Delete(context.Background(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitIngress("third", "192.168.50.201/VIP")
	e.waitIngress("second", "192.168.50.202/VIP")

	// Type LoadBalancer no more: its address goes back to the pool.
	s, err := e.admin.CoreV1().Services(lbNamespace).Get(context.Background(), "second", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.Ports[0].NodePort = 0
	s.Spec.AllocateLoadBalancerNodePorts = nil
	s.Spec.ExternalTrafficPolicy = ""
	if _, err := e.admin.CoreV1().Services(lbNamespace).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitIngress("second")
	e.createLB("fourth")
	e.waitIngress("fourth", "192.168.50.202/VIP")

	// spec.loadBalancerIP taken by an older Service: an Event says so.
	e.createLB("wants-201", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.168.50.201" })
	ev = e.waitEvent("wants-201", lbipam.ReasonRequested, corev1.EventTypeWarning)
	if want := "spec.loadBalancerIP 192.168.50.201 is held by the older Service lbipam/third"; ev.Message != want {
		t.Errorf("event %q, want %q", ev.Message, want)
	}
	stopB()
}

// Announcers of two nodes, each with its own l2_announce4: exactly one
// announces an assigned address; when that node turns NotReady the other
// takes it over (with gratuitous ARP) and the first withdraws it.
func TestLBIPAMAnnouncerFailover(t *testing.T) {
	testenv.Privileged(t)
	e := newLBEnv(t, "192.168.50.200/29")
	if e == nil {
		return
	}
	e.api.CreateNode(t, "node-1", "192.168.50.11", "")
	e.api.CreateNode(t, "node-2", "192.168.50.12", "")
	e.controller("node-1")
	type garp struct {
		node string
		addr netip.Addr
	}
	var mu sync.Mutex
	var garps []garp
	l2 := map[string]*control.L2AnnounceMap{}
	for i, name := range []string{"node-1", "node-2"} {
		spec, err := bpf.LoadSluice()
		if err != nil {
			t.Fatal(err)
		}
		ms := spec.Maps[bpf.SluiceMapL2Announce4].Copy()
		ms.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(ms)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		l2[name] = maps.New[bpf.SluiceL2Announce4Key, bpf.SluiceL2Announce4](m)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		dev := lbipam.Device{Ifindex: 10 + i, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}}
		go lbipam.RunAnnouncer(ctx, lbipam.AnnouncerOptions{Client: e.agent, Pool: e.pool, Node: name,
			L2:       control.NewL2Reconciler(l2[name], nil),
			Underlay: func([]netip.Addr) (lbipam.Device, error) { return dev, nil },
			GARP: func(_ context.Context, d lbipam.Device, a netip.Addr) {
				mu.Lock()
				garps = append(garps, garp{name, a})
				mu.Unlock()
			}})
	}
	e.createLB("web")
	e.waitIngress("web", "192.168.50.201/VIP")
	addr := netip.MustParseAddr("192.168.50.201")
	announcers := func() ([]string, error) {
		var who []string
		for _, name := range []string{"node-1", "node-2"} {
			es, err := control.ReadL2(l2[name])
			if err != nil {
				return nil, err
			}
			for _, x := range es {
				if x.Addr == addr {
					who = append(who, name)
				}
			}
		}
		return who, nil
	}
	var first string
	testenv.WaitFor(t, "one node announcing "+addr.String(), 30*time.Second, func() error {
		who, err := announcers()
		if err != nil || len(who) != 1 {
			return fmt.Errorf("announced by %v (%v)", who, err)
		}
		first = who[0]
		return nil
	})
	want := lbipam.Rank(addr, []string{"node-1", "node-2"})[0]
	if first != want {
		t.Errorf("announced by %s, want %s (the ranking's first)", first, want)
	}
	other := map[string]string{"node-1": "node-2", "node-2": "node-1"}[first]

	// The announcing node turns NotReady.
	n, err := e.admin.CoreV1().Nodes().Get(context.Background(), first, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := e.admin.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, other+" taking "+addr.String()+" over", 30*time.Second, func() error {
		who, err := announcers()
		if err != nil || !slices.Equal(who, []string{other}) {
			return fmt.Errorf("announced by %v (%v)", who, err)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(garps, []garp{{first, addr}, {other, addr}}) {
		t.Errorf("gratuitous ARPs %v, want one round by %s at first, then by %s", garps, first, other)
	}
}

// The agent with --lb-ip-pool and deploy/'s RBAC, alone in the cluster:
// it leads, assigns the Service an address, announces it on the device of
// its Node's InternalIP (c0, the client's link), and the client, on-link
// with that address, reaches the Service through ARP alone. A restarted
// agent keeps the address and the announcement.
func TestAgentLBIPAM(t *testing.T) {
	api := kubetest.Start(t)
	if api == nil {
		return
	}
	n := newNode(t, api, 1, "--lb-ip-pool", "10.244.0.200/30")
	n.applyService(service(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }))
	n.applySlice(n.slice(ready(1)...))
	n.startAgent(true)
	lb := "10.244.0.201"
	n.waitFor("the Service's address", 30*time.Second, func() error {
		s, err := n.admin.CoreV1().Services(namespace).Get(context.Background(), "whoami", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if in := s.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != lb || in[0].IPMode == nil || *in[0].IPMode != corev1.LoadBalancerIPModeVIP {
			return fmt.Errorf("ingress %+v", in)
		}
		return nil
	})
	var c0 lbipam.Device
	if err := n.topo.Node.Do(func() error {
		l, err := net.InterfaceByName(netlab.NodeClientDev)
		if err != nil {
			return err
		}
		c0 = lbipam.Device{Ifindex: l.Index, MAC: l.HardwareAddr}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	announced := func() error {
		dp, closeMaps, err := loader.OpenPinnedMaps(n.pinDir)
		if err != nil {
			return err
		}
		defer closeMaps()
		es, err := control.ReadL2(dp.L2Announce)
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Addr.String() != lb || es[0].Ifindex != c0.Ifindex || es[0].MAC.String() != c0.MAC.String() {
			return fmt.Errorf("l2_announce4 holds %v, want %s on ifindex %d at %s", es, lb, c0.Ifindex, c0.MAC)
		}
		return nil
	}
	n.waitFor("the announcement", 30*time.Second, announced)
	replies := n.counter("l2-announce-reply")
	// The client's /24 holds the pool: it resolves the address by ARP.
	n.waitFor("the backend through "+lb, 10*time.Second, func() error {
		who, err := n.ask("tcp", lb+":80")
		if err == nil && who != "backend-1" {
			err = fmt.Errorf("answered by %q", who)
		}
		return err
	})
	var neigh string
	if err := n.topo.Client.Do(func() error {
		ns, err := netlink.NeighList(0, netlink.FAMILY_V4)
		for _, e := range ns {
			if e.IP.String() == lb {
				neigh = e.HardwareAddr.String()
			}
		}
		return err
	}); err != nil || neigh != c0.MAC.String() {
		t.Errorf("client resolves %s to %q (%v), want the node's c0 %s", lb, neigh, err, c0.MAC)
	}
	if got := n.counter("l2-announce-reply"); got <= replies {
		t.Errorf("l2-announce-reply %d -> %d: the datapath answered no ARP request", replies, got)
	}
	n.killAgent()
	n.startAgent(true)
	// Something to sync on: a second Service, the next address.
	n.applyService(service(func(s *corev1.Service) {
		s.Name, s.Spec.ClusterIP, s.Spec.Type = "second", "10.96.0.11", corev1.ServiceTypeLoadBalancer
	}))
	n.waitFor("the second Service's address", 30*time.Second, func() error {
		s, err := n.admin.CoreV1().Services(namespace).Get(context.Background(), "second", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].IP != "10.244.0.202" {
			return fmt.Errorf("second: %v %+v", err, s.Status.LoadBalancer.Ingress)
		}
		return nil
	})
	s, err := n.admin.CoreV1().Services(namespace).Get(context.Background(), "whoami", metav1.GetOptions{})
	if err != nil || len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].IP != lb {
		t.Errorf("after the restart whoami has %v (%v), want %s still", s.Status.LoadBalancer.Ingress, err, lb)
	}
}
