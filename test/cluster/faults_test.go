//go:build cluster

package cluster

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// traffic is a client outside the cluster sending one request after another
// to url until stopped, counting what failed.
type traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop, done chan struct{}
}

func startTraffic(url, want string) *traffic {
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for {
			select {
			case <-tr.stop:
				return
			default:
			}
			out, err := fromOutside("curl", "-sS", "--max-time", "3", url)
			if err == nil && strings.Contains(out, want) {
				tr.ok.Add(1)
			} else {
				tr.failed.Add(1)
				tr.mu.Lock()
				tr.errs = append(tr.errs, fmt.Sprintf("%s: %v %q", time.Now().Format("15:04:05.000"), err, out))
				tr.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return tr
}

// finish stops the client and fails t if a request failed or too few ran.
func (tr *traffic) finish(t *testing.T, min int64) {
	t.Helper()
	close(tr.stop)
	<-tr.done
	t.Logf("%d requests answered, %d failed", tr.ok.Load(), tr.failed.Load())
	if tr.failed.Load() > 0 {
		t.Errorf("%d requests failed: %s", tr.failed.Load(), strings.Join(tr.errs, "; "))
	}
	if tr.ok.Load() < min {
		t.Errorf("only %d requests answered, want at least %d", tr.ok.Load(), min)
	}
}

// backends is a whoami Deployment with a Pod on each node and a NodePort.
func backends(t testing.TB, name string, nodePort int) string {
	t.Helper()
	manifest := fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, labels: {app: %[1]s}}
spec:
  replicas: 2
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: %[1]s}}}
      containers:
      - {name: app, image: sluice.local/whoami:1}
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  type: NodePort
  selector: {app: %[1]s}
  ports:
  - {port: 80, targetPort: 80, nodePort: %[2]d}
`, name, nodePort)
	applyManifest(t, manifest)
	t.Cleanup(func() { kubectl("delete", "deployment/"+name, "service/"+name, "--wait=true") })
	mustKubectl(t, "rollout", "status", "deployment/"+name, "--timeout=120s")
	url := fmt.Sprintf("http://%s:%d", nodeIPs()[0], nodePort)
	testenv.WaitFor(t, url+" answers from outside", time.Minute, contains(name,
		func() (string, error) { return fromOutside("curl", "-s", "--max-time", "3", url) }))
	return url
}

func applyManifest(t testing.TB, manifest string) {
	t.Helper()
	f := t.TempDir() + "/m.yaml"
	if err := writeFile(f, manifest); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", f)
}

// agentPod is the sluice Pod on node.
func agentPod(t testing.TB, node string) string {
	t.Helper()
	return jsonpath(t, "pods -n kube-system -l app.kubernetes.io/name=sluice --field-selector spec.nodeName="+node,
		"{.items[0].metadata.name}")
}

// A node's sluice Pod deleted while traffic flows through that node: no
// request fails (the pinned datapath serves on), and the DaemonSet's
// replacement adopts the pinned state instead of starting afresh.
func TestAgentPodReplaced(t *testing.T) {
	url := backends(t, "fault-agent", 30110)
	node := nodes()[0]
	old := agentPod(t, node)
	tr := startTraffic(url, "fault-agent")
	time.Sleep(2 * time.Second) // some requests before the fault
	mustKubectl(t, "-n", "kube-system", "delete", "pod", old, "--wait=true")
	var repl string
	testenv.WaitFor(t, "the DaemonSet's replacement Ready on "+node, 2*time.Minute, func() error {
		repl = agentPod(t, node)
		if repl == "" || repl == old {
			return fmt.Errorf("no replacement yet")
		}
		if r := jsonpath(t, "-n kube-system pod/"+repl, `{.status.conditions[?(@.type=="Ready")].status}`); r != "True" {
			return fmt.Errorf("%s Ready=%q", repl, r)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // requests after it
	tr.finish(t, 20)
	if logs := mustKubectl(t, "-n", "kube-system", "logs", repl); !strings.Contains(logs, "adopted pinned state") {
		t.Errorf("%s did not adopt the pinned state:\n%s", repl, logs)
	}
}

// The API server restarted: the agents keep everything programmed (a
// watch that ends is not a withdrawal) and traffic flows throughout.
func TestAPIServerRestart(t *testing.T) {
	url := backends(t, "fault-api", 30111)
	restarts := jsonpath(t, "pods -n kube-system -l app.kubernetes.io/name=sluice", "{.items[*].status.containerStatuses[0].restartCount}")
	tr := startTraffic(url, "fault-api")
	time.Sleep(2 * time.Second)
	if out, err := run(3*time.Minute, "../../hack/cluster/cluster.sh", "restart-apiserver"); err != nil {
		t.Fatalf("restarting the API server: %v\n%s", err, out)
	}
	time.Sleep(3 * time.Second)
	tr.finish(t, 20)
	if got := jsonpath(t, "pods -n kube-system -l app.kubernetes.io/name=sluice", "{.items[*].status.containerStatuses[0].restartCount}"); got != restarts {
		t.Errorf("agents' restart counts %q, before the API server restart %q", got, restarts)
	}
	// A change made after the restart still reaches the datapath.
	mustKubectl(t, "scale", "deployment/fault-api", "--replicas=3")
	mustKubectl(t, "rollout", "status", "deployment/fault-api", "--timeout=120s")
	want := strings.Fields(jsonpath(t, "pods -l app=fault-api", "{.items[*].status.podIP}"))
	testenv.WaitFor(t, "every replica answers after the restart", time.Minute, func() error {
		seen := map[string]bool{}
		for i := 0; i < 30 && len(seen) < len(want); i++ {
			out, err := fromOutside("curl", "-s", "--max-time", "3", url)
			if err != nil {
				return err
			}
			for _, ip := range want {
				if strings.Contains(out, ip) {
					seen[ip] = true
				}
			}
		}
		if len(seen) < len(want) {
			return fmt.Errorf("answered by %d of %d replicas", len(seen), len(want))
		}
		return nil
	})
}
