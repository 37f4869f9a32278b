package k8s

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/kubetest"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// One agent with only deploy/'s RBAC follows a Service through every
// ClusterIP rule the API can express, with real traffic after each step.
func TestAgentFollowsTheAPIServer(t *testing.T) {
	api := kubetest.Start(t)
	n := newNode(t, api, 3)
	n.applyService(service())
	n.applySlice(n.slice(ready(1, 2)...))
	n.startAgent(true)
	n.waitAnswers("backends 1 and 2", 30, "backend-1", "backend-2")

	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"scale up", func() { n.applySlice(n.slice(ready(1, 2, 3)...)) }, []string{"backend-1", "backend-2", "backend-3"}},
		{"scale down", func() { n.applySlice(n.slice(ready(1)...)) }, []string{"backend-1"}},
		{"terminating endpoint gives way to a ready one (rule 9)", func() {
			n.applySlice(n.slice(endpoint{backend: 1, ready: ptr(false), serving: ptr(true), terminating: ptr(true)}, endpoint{backend: 2}))
		}, []string{"backend-2"}},
		{"only terminating: they serve (rule 9)", func() {
			n.applySlice(n.slice(endpoint{backend: 1, ready: ptr(false), serving: ptr(true), terminating: ptr(true)},
				endpoint{backend: 2, ready: ptr(false), serving: ptr(false), terminating: ptr(true)}))
		}, []string{"backend-1"}},
		{"zone hints of this node's zone (rule 11)", func() {
			n.applySlice(n.slice(endpoint{backend: 1, zoneHint: zone}, endpoint{backend: 2, zoneHint: "zone-b"}, endpoint{backend: 3, zoneHint: zone}))
		}, []string{"backend-1", "backend-3"}},
		{"internalTrafficPolicy Local uses local endpoints (rule 12)", func() {
			n.applySlice(n.slice(endpoint{backend: 1}, endpoint{backend: 2, local: true}))
			n.applyService(service(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal) }))
		}, []string{"backend-2"}},
		{"no local endpoint: DROP (rule 14)", func() {
			n.applySlice(n.slice(ready(1, 3)...))
		}, []string{"timeout"}},
		{"back to Cluster, no endpoints: REJECT", func() {
			n.applyService(service())
			n.applySlice(n.slice())
		}, []string{"refused"}},
	}
	for _, s := range steps {
		s.change()
		n.waitAnswers(s.name, 10, s.want...)
	}
	if got := n.counter("drop-no-local-endpoints"); got == 0 {
		t.Errorf("drop-no-local-endpoints counted nothing")
	}

	// Session affinity (rule 22): one client, one backend.
	n.applySlice(n.slice(ready(1, 2, 3)...))
	n.applyService(service(func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
	}))
	n.waitFor("affinity", 5*time.Second, func() error {
		if hits := n.answers(30); len(hits) != 1 || hits["timeout"] > 0 || hits["refused"] > 0 {
			return fmt.Errorf("answers %v, want one backend", hits)
		}
		return nil
	})

	// Rule 1: a service-proxy-name label hides the Service.
	n.applyService(service(func(s *corev1.Service) { s.Labels = map[string]string{control.LabelServiceProxyName: "other"} }))
	n.waitFor("the labelled Service to be dropped", 5*time.Second, func() error { return n.frontends(0) })
	n.applyService(service())
	n.waitFor("the Service back", 5*time.Second, func() error { return n.frontends(1) })
	n.waitAnswers("back", 30, "backend-1", "backend-2", "backend-3")

	// Deleted: its frontend goes.
	if err := n.admin.CoreV1().Services(namespace).Delete(context.Background(), "whoami", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the deleted Service to be removed", 5*time.Second, func() error { return n.frontends(0) })

	// The cluster autoscaler marks the node for removal: /healthz says it
	// is not eligible (load balancers stop sending here), /livez does not
	// care (rule 29).
	ctx := context.Background()
	node, err := n.admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: control.TaintToBeDeleted, Effect: corev1.TaintEffectNoSchedule})
	if _, err := n.admin.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor("/healthz to say the node is not eligible", 5*time.Second, func() error {
		code, body, err := cli.Healthz(n.topo.Node, cli.DefaultHealthzAddr, "/healthz")
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, `"nodeEligible":false`) {
			return fmt.Errorf("/healthz %d %s (%v)", code, body, err)
		}
		return nil
	})
	if code := n.health("/livez"); code != http.StatusOK {
		t.Errorf("/livez %d on a leaving node, want 200", code)
	}
}

// frontends checks how many frontends on vip the maps hold (the API
// server's own "kubernetes" Service has another).
func (n *node) frontends(want int) error {
	if got := n.frontendsOn(vip); got != want {
		return fmt.Errorf("%d frontends on %s programmed, want %d", got, vip, want)
	}
	return nil
}

// Losing the API server never clears programmed state; a restarted agent
// keeps the previous datapath serving until the first complete list (rule
// 31), /healthz says 503 meanwhile and /livez turns 503 once the wait
// passes twice the sync period (rule 29); with the server back, the agent
// lists, syncs and follows changes again.
func TestAPIServerLossKeepsServing(t *testing.T) {
	api := kubetest.Start(t)
	const syncPeriod = time.Second
	n := newNode(t, api, 2, "--sync-period", syncPeriod.String())
	n.applyService(service())
	n.applySlice(n.slice(ready(1)...))
	n.startAgent(true)
	n.waitAnswers("backend 1", 10, "backend-1")

	api.StopAPIServer()
	// Full resyncs run without the server: nothing is lost.
	fullSyncs := func() float64 { return n.metric("sluice_sync_full_proxy_rules_duration_seconds_count") }
	before := fullSyncs()
	n.waitFor("two full resyncs without the API server", 10*syncPeriod, func() error {
		if got := fullSyncs(); got < before+2 {
			return fmt.Errorf("%v full syncs, want %v", got, before+2)
		}
		return nil
	})
	n.waitAnswers("still serving without the API server", 10, "backend-1")
	if code := n.health("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d with nothing to sync, want 200", code)
	}

	// A restart while the server is down: the pinned datapath serves,
	// the agent is not ready, and not live once it waited too long.
	n.killAgent()
	n.startAgent(false)
	n.waitFor("the new agent's /healthz to answer 503", 10*time.Second, func() error {
		if code := n.health("/healthz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/healthz %d", code)
		}
		return nil
	})
	n.waitAnswers("the previous datapath serving", 10, "backend-1")
	n.waitFor("/livez to turn 503 past twice the sync period", testenv.Scaled(10*time.Second), func() error {
		if code := n.health("/livez"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/livez %d", code)
		}
		return nil
	})
	n.waitAnswers("still serving", 10, "backend-1")

	api.StartAPIServer()
	n.waitFor("/healthz 200 after the resync", 30*time.Second, func() error {
		if code := n.health("/healthz"); code != http.StatusOK {
			return fmt.Errorf("/healthz %d", code)
		}
		if code := n.health("/livez"); code != http.StatusOK {
			return fmt.Errorf("/livez %d", code)
		}
		return nil
	})
	n.applySlice(n.slice(ready(2)...))
	n.waitAnswers("a change after the server came back", 10, "backend-2")
}
