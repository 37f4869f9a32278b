//go:build cluster

// Package cluster runs against the lab cluster of hack/cluster/ (kubelet,
// containerd, the CNI bridge plugin, CoreDNS, and sluice's DaemonSet as the
// only service proxy), which hack/cluster/test.sh (make test-cluster) brings
// up before and removes after. Clients are the tutorials' Pods and the
// external client namespace on the nodes' underlay.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/agenttest"
)

// lab is the cluster's env file (hack/cluster/cluster.sh writes it).
var lab = map[string]string{}

func TestMain(m *testing.M) {
	if os.Getenv(agenttest.RunAsAsker) == "1" {
		// Re-executed to make a benchmark's connects from a Pod's
		// namespace and cgroup (agenttest.ConnectStormFrom).
		os.Exit(agenttest.Main(m))
	}
	run := os.Getenv("CLUSTER_RUN")
	if run == "" {
		run = "/run/sluice-cluster"
	}
	f, err := os.Open(filepath.Join(run, "env"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "no lab cluster (%v): make test-cluster brings one up\n", err)
		os.Exit(1)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			lab[k] = strings.Trim(v, `"`)
		}
	}
	f.Close()
	os.Exit(m.Run())
}

// run runs a command with a deadline and returns its combined output.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+lab["KUBECONFIG"])
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

// kubectl runs in the control plane's namespace: the API server's address
// exists only in the lab.
func kubectl(args ...string) (string, error) {
	return inClient(2*time.Minute, append([]string{lab["CLUSTER_BIN"] + "/kubectl"}, args...)...)
}

func inClient(timeout time.Duration, cmd ...string) (string, error) {
	return run(timeout, "nsenter", append([]string{"--net=/run/netns/" + lab["CLUSTER_CLIENT_NS"]}, cmd...)...)
}

func mustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// execIn runs cmd in a Pod's first container.
func execIn(pod string, cmd ...string) (string, error) {
	return kubectl(append([]string{"exec", pod, "--"}, cmd...)...)
}

// fromOutside runs cmd in the external client's namespace.
func fromOutside(cmd ...string) (string, error) {
	return run(30*time.Second, "nsenter", append([]string{"--net=/run/netns/" + lab["CLUSTER_EXT_NS"]}, cmd...)...)
}

// inNode runs cmd in a node's network namespace (as a host-network process).
func inNode(node string, cmd ...string) (string, error) {
	return run(30*time.Second, "nsenter", append([]string{"--net=/run/netns/slc-" + node}, cmd...)...)
}

// contains is a condition: out (from f) holds want.
func contains(want string, f func() (string, error)) func() error {
	return func() error {
		out, err := f()
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("%q lacks %q", out, want)
		}
		return nil
	}
}

// jsonpath is `kubectl get OBJ -o jsonpath=PATH`; obj may hold flags
// ("pods -n kube-system -l app=x").
func jsonpath(t testing.TB, obj, path string) string {
	t.Helper()
	args := append([]string{"get"}, strings.Fields(obj)...)
	return strings.TrimSpace(mustKubectl(t, append(args, "-o", "jsonpath="+path)...))
}

func nodes() []string { return strings.Fields(lab["CLUSTER_NODES"]) }

func nodeIPs() []string { return strings.Fields(lab["CLUSTER_NODE_IPS"]) }

func labDir(parts ...string) string { return filepath.Join(append([]string{"labs"}, parts...)...) }

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
