package kubetest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func deployDir(t *testing.T) string {
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(repo, "deploy")
}

func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: got %v, want 403 Forbidden", what, err)
	}
}

// The server authorizes with RBAC, deploy/'s ClusterRole gives the agent
// exactly what it reads, watches deliver, and objects survive a restart
// of the API server.
func TestAPIServer(t *testing.T) {
	a := Start(t)
	admin := a.AdminClient()
	c := ctx(t)

	// RBAC is on: a ServiceAccount bound to nothing may not list nodes.
	nobody := a.Client(t, a.ServiceAccountKubeconfig(t, "default", "nobody"))
	_, err := nobody.CoreV1().Nodes().List(c, metav1.ListOptions{})
	forbidden(t, "unbound ServiceAccount lists nodes", err)

	// deploy/ passes the server's validation, and its RBAC applied
	// for real binds the agent's ServiceAccount.
	if err := a.KubectlDryRun(deployDir(t)); err != nil {
		t.Fatalf("deploy/ rejected: %v", err)
	}
	a.ApplyFiles(t, filepath.Join(deployDir(t), "rbac.yaml"))
	agentConfig := a.ServiceAccountKubeconfig(t, "kube-system", "sluice")
	agent := a.Client(t, agentConfig)

	if _, err := agent.CoreV1().Services("").List(c, metav1.ListOptions{}); err != nil {
		t.Errorf("agent lists services: %v", err)
	}
	if _, err := agent.DiscoveryV1().EndpointSlices("").List(c, metav1.ListOptions{}); err != nil {
		t.Errorf("agent lists endpointslices: %v", err)
	}
	if _, err := agent.CoreV1().Nodes().List(c, metav1.ListOptions{}); err != nil {
		t.Errorf("agent lists nodes: %v", err)
	}
	// Nothing more than that.
	_, err = agent.CoreV1().Services("default").Get(c, "kubernetes", metav1.GetOptions{})
	forbidden(t, "agent gets a service", err)
	_, err = agent.CoreV1().Services("default").Create(c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	forbidden(t, "agent creates a service", err)
	_, err = agent.CoreV1().Pods("").List(c, metav1.ListOptions{})
	forbidden(t, "agent lists pods", err)
	_, err = agent.CoreV1().Secrets("kube-system").List(c, metav1.ListOptions{})
	forbidden(t, "agent lists secrets", err)
	err = agent.CoreV1().Nodes().Delete(c, "n", metav1.DeleteOptions{})
	forbidden(t, "agent deletes a node", err)

	// Watches, opened as the agent, see what the admin creates.
	watches := map[string]watch.Interface{}
	for what, open := range map[string]func() (watch.Interface, error){
		"services": func() (watch.Interface, error) { return agent.CoreV1().Services("").Watch(c, metav1.ListOptions{}) },
		"endpointslices": func() (watch.Interface, error) {
			return agent.DiscoveryV1().EndpointSlices("").Watch(c, metav1.ListOptions{})
		},
		"nodes": func() (watch.Interface, error) { return agent.CoreV1().Nodes().Watch(c, metav1.ListOptions{}) },
	} {
		w, err := open()
		if err != nil {
			t.Fatalf("agent watches %s: %v", what, err)
		}
		defer w.Stop()
		watches[what] = w
	}
	svc, err := admin.CoreV1().Services("default").Create(c, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Error("the service got no ClusterIP")
	}
	_, err = admin.DiscoveryV1().EndpointSlices("default").Create(c, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, NodeName: ptr.To("node-a")}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.CreateNode(t, "node-a", "192.0.2.10", "zone-1", "10.244.7.0/24")
	for what, name := range map[string]string{"services": "web", "endpointslices": "web-1", "nodes": "node-a"} {
		waitAdded(t, watches[what], what, name)
	}

	// The node is as a kubelet registers it, and the agent may get it.
	node, err := agent.CoreV1().Nodes().Get(c, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("agent gets its node: %v", err)
	}
	checkNode(t, node)

	// The API server goes away and comes back on the same URL, with the
	// objects (etcd kept running) and the tokens (same signing key).
	url := a.URL
	a.StopAPIServer()
	if _, err := admin.CoreV1().Nodes().Get(c, "node-a", metav1.GetOptions{}); err == nil {
		t.Error("the API server answers while stopped")
	} else if _, isStatus := err.(apierrors.APIStatus); isStatus {
		t.Errorf("while stopped: %v, want a connection error", err)
	}
	a.StartAPIServer()
	if a.URL != url {
		t.Errorf("URL %s after the restart, was %s", a.URL, url)
	}
	node, err = agent.CoreV1().Nodes().Get(c, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after the restart, the agent's token gets the node: %v", err)
	}
	checkNode(t, node)
	checkExists(c, t, admin)
}

func checkNode(t *testing.T, node *corev1.Node) {
	t.Helper()
	if node.Labels[ZoneLabel] != "zone-1" {
		t.Errorf("node labels %v, want %s=zone-1", node.Labels, ZoneLabel)
	}
	var ip string
	for _, addr := range node.Status.Addresses {
		if addr.Type == corev1.NodeInternalIP {
			ip = addr.Address
		}
	}
	if ip != "192.0.2.10" {
		t.Errorf("node addresses %v, want InternalIP 192.0.2.10", node.Status.Addresses)
	}
	if node.Spec.PodCIDR != "10.244.7.0/24" || len(node.Spec.PodCIDRs) != 1 || node.Spec.PodCIDRs[0] != "10.244.7.0/24" {
		t.Errorf("node podCIDR %q, podCIDRs %v; want 10.244.7.0/24 in both", node.Spec.PodCIDR, node.Spec.PodCIDRs)
	}
}

func checkExists(c context.Context, t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	if _, err := admin.CoreV1().Services("default").Get(c, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("service after the restart: %v", err)
	}
	if _, err := admin.DiscoveryV1().EndpointSlices("default").Get(c, "web-1", metav1.GetOptions{}); err != nil {
		t.Errorf("endpointslice after the restart: %v", err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Get(c, "sluice", metav1.GetOptions{}); err != nil {
		t.Errorf("clusterrolebinding after the restart: %v", err)
	}
}

func waitAdded(t *testing.T, w watch.Interface, what, name string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Errorf("watch of %s closed before %s was added", what, name)
				return
			}
			if m, err := metaOf(ev.Object); err == nil && ev.Type == watch.Added && m.GetName() == name {
				return
			}
		case <-timeout:
			t.Errorf("watch of %s: no ADDED %s within 10s", what, name)
			return
		}
	}
}

func metaOf(obj any) (metav1.Object, error) {
	if m, ok := obj.(metav1.Object); ok {
		return m, nil
	}
	return nil, apierrors.NewBadRequest("not an object")
}
