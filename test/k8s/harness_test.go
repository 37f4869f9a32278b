// Package k8s is the integration suite against a real API server: the
// agent runs in a lab node namespace with --kubeconfig whose credentials
// are a ServiceAccount token bound to deploy/'s ClusterRole, and real
// traffic goes from a client namespace through the datapath. It is apart
// from ./test/ because it needs the API server's binaries, which the VM
// matrix does not carry.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/kubetest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m)) }

const (
	vip       = "10.96.0.10"
	namespace = "e2e"
	zone      = "zone-a"
)

// node is one lab node running the agent against the API server, a client
// and N backends serving whoami.
type node struct {
	t          testing.TB
	api        *kubetest.APIServer
	admin      kubernetes.Interface
	topo       *netlab.Topology
	name       string
	pinDir     string
	kubeconfig string // the agent's: the ServiceAccount's token, via the proxy
	agent      *agenttest.Agent
	agentLog   string
	agentArgs  []string
	stop       context.CancelFunc
}

func newNode(t testing.TB, api *kubetest.APIServer, backends int, agentArgs ...string) *node {
	t.Helper()
	testenv.Privileged(t)
	prefix := fmt.Sprintf("slk%d", os.Getpid()%100000)
	topo, err := netlab.NewTopology(prefix, backends)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	n := &node{
		t: t, api: api, admin: api.AdminClient(), topo: topo, stop: stop,
		name:      prefix + "-node",
		pinDir:    filepath.Join(loader.DefaultBPFFS, "sluice-"+prefix),
		agentLog:  filepath.Join(t.TempDir(), "agent.log"),
		agentArgs: agentArgs,
	}
	t.Cleanup(n.close)
	for i, be := range topo.Backends {
		var srv *whoami.Server
		if err := be.Do(func() (err error) {
			srv, err = whoami.Listen(fmt.Sprintf("backend-%d", i+1), "0.0.0.0:8080")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ctx)
	}
	// The Node object, as its kubelet would register it: its InternalIP
	// is the address the client reaches the node on, its pod CIDR holds
	// the client and the backends.
	api.CreateNode(t, n.name, netlab.NodeClientAddr.String(), zone, netlab.TopologyPodCIDR.String())
	// deploy/'s RBAC, and a token of its ServiceAccount: if the agent
	// can do its job with it, the role is enough.
	api.ApplyFiles(t, repoFile(t, "deploy/rbac.yaml"))
	saConfig := api.ServiceAccountKubeconfig(t, "kube-system", "sluice")
	n.kubeconfig = n.proxyAPI(ctx, saConfig)
	if _, err := n.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return n
}

func repoFile(t testing.TB, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proxyAPI makes the API server, which listens on the host's loopback,
// reachable from the node namespace's loopback (as an API server is from
// a hostNetwork pod): a listener created inside the node namespace,
// forwarding to the server from the test's namespace. It returns a copy
// of kubeconfig pointing at it.
func (n *node) proxyAPI(ctx context.Context, kubeconfig string) string {
	n.t.Helper()
	u, err := url.Parse(n.api.URL)
	if err != nil {
		n.t.Fatal(err)
	}
	var ln net.Listener
	if err := n.topo.Node.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:"+u.Port())
		return err
	}); err != nil {
		n.t.Fatal(err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	// Same address and port as the server's, so the file is valid as is.
	return kubeconfig
}

func (n *node) close() {
	n.stop()
	n.killAgent()
	agenttest.Teardown(n.t, n.topo, n.pinDir, n.agentLog)
}

// startAgent starts the agent in the node namespace; wait says whether to
// wait until /healthz says it serves.
func (n *node) startAgent(wait bool) {
	n.t.Helper()
	args := append([]string{"agent", "--kubeconfig", n.kubeconfig, "--pin-dir", n.pinDir,
		"--node-name", n.name, "--service-cidr", "10.96.0.0/12", "--min-sync-period", "0"}, n.agentArgs...)
	n.agent = agenttest.Start(n.t, n.topo.Node, n.agentLog, nil, args...)
	if wait {
		if err := cli.WaitServing(n.topo.Node, cli.DefaultHealthzAddr, testenv.Scaled(20*time.Second)); err != nil {
			n.t.Fatal(err)
		}
	}
}

func (n *node) killAgent() {
	n.agent.Kill()
	n.agent = nil
}

// health is the agent's answer on path.
func (n *node) health(path string) int {
	code, _, err := cli.Healthz(n.topo.Node, cli.DefaultHealthzAddr, path)
	if err != nil {
		return 0
	}
	return code
}

// metric is one sample of the agent's /metrics (first line whose name
// and labels start with name), as a scraper in the node would read it.
func (n *node) metric(name string) float64 {
	n.t.Helper()
	var body string
	err := n.topo.Node.Do(func() error {
		c, err := net.Dial("tcp", "127.0.0.1:10249")
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
		b, err := io.ReadAll(c)
		body = string(b)
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
				return v
			}
		}
	}
	n.t.Fatalf("no metric %s", name)
	return 0
}

// frontendsOn is how many frontends on addr the maps hold.
func (n *node) frontendsOn(addr string) int {
	n.t.Helper()
	dp, closeMaps, err := loader.OpenPinnedMaps(n.pinDir)
	if err != nil {
		n.t.Fatal(err)
	}
	defer closeMaps()
	views, err := control.Inspect(dp.LB4)
	if err != nil {
		n.t.Fatal(err)
	}
	got := 0
	for _, v := range views {
		if strings.HasPrefix(v.Frontend, addr+":") {
			got++
		}
	}
	return got
}

// waitFor polls cond until it holds or the (scaled) timeout passes.
func (n *node) waitFor(what string, timeout time.Duration, cond func() error) {
	n.t.Helper()
	testenv.WaitFor(n.t, what, timeout, cond)
}

// ask sends one whoami request from the client pod.
func (n *node) ask(proto, addr string) (string, error) {
	return agenttest.Ask(n.topo.Client, proto, addr, 300*time.Millisecond)
}

// answers sends count TCP requests and counts who answered; failures
// count under their error.
func (n *node) answers(count int) map[string]int {
	hits := map[string]int{}
	for range count {
		who, err := n.ask("tcp", vip+":80")
		if err != nil {
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				who = "refused"
			default:
				who = "timeout"
			}
		}
		hits[who]++
	}
	return hits
}

// waitAnswers waits until count requests are answered exactly by want
// (names, or "refused"/"timeout").
func (n *node) waitAnswers(what string, count int, want ...string) {
	n.t.Helper()
	n.waitFor(what, 5*time.Second, func() error {
		hits := n.answers(count)
		for _, w := range want {
			if hits[w] == 0 {
				return fmt.Errorf("answers %v, want only %v", hits, want)
			}
		}
		if len(hits) != len(want) {
			return fmt.Errorf("answers %v, want only %v", hits, want)
		}
		return nil
	})
}

// counter reads one datapath counter from the pinned maps.
func (n *node) counter(reason string) uint64 {
	n.t.Helper()
	return agenttest.Counter(n.t, n.pinDir, reason)
}

// service is the whoami Service on vip: selector-less, its endpoints in
// hand-written slices (no controller-manager runs).
func service(mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami", Namespace: namespace},
		Spec: corev1.ServiceSpec{
			ClusterIP: vip,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

// endpoint is a backend (1-based) with its conditions, node and zone hint.
type endpoint struct {
	backend                     int
	ready, serving, terminating *bool
	local                       bool
	zoneHint                    string
}

func ptr[T any](v T) *T { return &v }

func (n *node) slice(eps ...endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami-1", Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: "whoami"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		d := discoveryv1.Endpoint{
			Addresses:  []string{netlab.BackendAddr(e.backend).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
			NodeName:   ptr("elsewhere"),
		}
		if e.local {
			d.NodeName = ptr(n.name)
		}
		if e.zoneHint != "" {
			d.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: e.zoneHint}}}
		}
		es.Endpoints = append(es.Endpoints, d)
	}
	return es
}

func ready(backends ...int) []endpoint {
	var out []endpoint
	for _, b := range backends {
		out = append(out, endpoint{backend: b})
	}
	return out
}

// apply creates or updates objects as the admin.
func (n *node) applyService(s *corev1.Service) {
	n.t.Helper()
	ctx := context.Background()
	c := n.admin.CoreV1().Services(namespace)
	old, err := c.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, s, metav1.CreateOptions{})
	} else if err == nil {
		s.ResourceVersion = old.ResourceVersion
		_, err = c.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		n.t.Fatalf("service %s: %v", s.Name, err)
	}
}

func (n *node) applySlice(es *discoveryv1.EndpointSlice) {
	n.t.Helper()
	ctx := context.Background()
	c := n.admin.DiscoveryV1().EndpointSlices(namespace)
	old, err := c.Get(ctx, es.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, es, metav1.CreateOptions{})
	} else if err == nil {
		es.ResourceVersion = old.ResourceVersion
		_, err = c.Update(ctx, es, metav1.UpdateOptions{})
	}
	if err != nil {
		n.t.Fatalf("slice %s: %v", es.Name, err)
	}
}

func logs(n *node) string {
	b, _ := os.ReadFile(n.agentLog)
	return strings.TrimSpace(string(b))
}
