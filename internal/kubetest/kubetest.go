// Package kubetest runs a real Kubernetes API server (etcd and
// kube-apiserver, RBAC on, no controllers, no kubelet) for integration
// tests, through hack/k8s/apiserver.sh. The binaries come from
// hack/k8s/binaries.sh, which builds them from the Go module proxy the
// first time (about 12 minutes; `make k8s-binaries` does it ahead of the
// tests) and caches them in /var/cache/sluice-k8s.
//
// One server takes 3 to 5 seconds to become ready and about 300 MiB.
// Without a controller-manager, nothing creates the "default"
// ServiceAccounts, tokens of Secrets or the endpoints of Services; the
// tests make what they need (ServiceAccountKubeconfig, CreateNode).
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-lb/sluice/internal/testenv"
)

const module = "github.com/sluice-lb/sluice"

// ZoneLabel is the label CreateNode puts the zone in.
const ZoneLabel = "topology.kubernetes.io/zone"

// APIServer is a running test API server.
type APIServer struct {
	// Dir holds its certificates, data, kubeconfigs and logs
	// (apiserver.log, etcd.log).
	Dir string
	// URL is https://127.0.0.1:<port>; it stays the same across
	// StopAPIServer and StartAPIServer.
	URL string
	// Kubeconfig is the admin's (CN=sluice-admin, O=system:masters).
	Kubeconfig string
	// CAFile verifies the server's certificate.
	CAFile string
	// Bin holds kube-apiserver, kubectl and etcd.
	Bin string

	tb     testing.TB
	script string
}

// Start runs an API server in a fresh directory, stopped when t ends.
// When the binaries are missing and cannot be built, t is skipped (failed
// under CI=true).
func Start(t testing.TB) *APIServer {
	t.Helper()
	repo, err := repoRoot()
	if err != nil {
		testenv.Unavailable(t, "kubetest: %v", err)
		return nil
	}
	bin, err := binaries(repo)
	if err != nil {
		testenv.Unavailable(t, "kubetest: no kube-apiserver, etcd and kubectl (make k8s-binaries): %v", err)
		return nil
	}
	a := &APIServer{
		Dir:    t.TempDir(),
		Bin:    bin,
		tb:     t,
		script: filepath.Join(repo, "hack", "k8s", "apiserver.sh"),
	}
	// Registered before the start, so that a half-started server is
	// stopped too; it runs before t.TempDir's removal (cleanups run last
	// in, first out).
	t.Cleanup(func() {
		if t.Failed() {
			a.logTails()
		}
		if out, err := a.run("stop"); err != nil {
			t.Errorf("kubetest: stop: %v\n%s", err, out)
		}
	})
	a.runOrFatal(t, "start")
	return a
}

// repoRoot is the checkout's top directory: the nearest directory above
// the test's working directory (its package directory) whose go.mod is
// this module's, else the one this file was compiled from.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if raw, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				bytes.HasPrefix(bytes.TrimSpace(raw), []byte("module "+module+"\n")) {
				if _, err := os.Stat(filepath.Join(d, "hack", "k8s", "apiserver.sh")); err == nil {
					return d, nil
				}
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", fmt.Errorf("no checkout of %s with hack/k8s/apiserver.sh above %v", module, starts)
}

// binaries runs hack/k8s/binaries.sh, which prints the directory of the
// binaries (building them when missing).
func binaries(repo string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "hack", "k8s", "binaries.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%v\n%s", err, tail(stderr.String(), 20))
	}
	return strings.TrimSpace(string(out)), nil
}

func (a *APIServer) run(command string) ([]byte, error) {
	cmd := exec.Command(a.script, command, a.Dir)
	cmd.Env = append(os.Environ(),
		"SLUICE_K8S_BIN="+a.Bin,
		// The script's watchdog stops the servers when this process is
		// gone, should the test end without its cleanups (a timeout).
		"SLUICE_K8S_OWNER_PID="+strconv.Itoa(os.Getpid()))
	return cmd.CombinedOutput()
}

func (a *APIServer) runOrFatal(t testing.TB, command string) {
	t.Helper()
	start := time.Now()
	out, err := a.run(command)
	if err != nil {
		t.Fatalf("kubetest: apiserver.sh %s %s: %v\n%s", command, a.Dir, err, out)
	}
	if err := a.readEnv(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: %s in %v: %s", command, time.Since(start).Round(time.Millisecond), a.URL)
}

// readEnv reads DIR/env, which the script rewrites at every start.
func (a *APIServer) readEnv() error {
	f, err := os.Open(filepath.Join(a.Dir, "env"))
	if err != nil {
		return err
	}
	defer f.Close()
	env := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			env[k] = v
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	a.URL, a.Kubeconfig, a.CAFile = env["SLUICE_K8S_URL"], env["KUBECONFIG"], env["SLUICE_K8S_CA"]
	if a.URL == "" || a.Kubeconfig == "" || a.CAFile == "" {
		return fmt.Errorf("%s/env lacks SLUICE_K8S_URL, KUBECONFIG or SLUICE_K8S_CA: %v", a.Dir, env)
	}
	return nil
}

func (a *APIServer) logTails() {
	for _, name := range []string{"etcd.log", "apiserver.log"} {
		raw, err := os.ReadFile(filepath.Join(a.Dir, name))
		if err == nil {
			a.tb.Logf("kubetest: last lines of %s:\n%s", name, tail(string(raw), 30))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StopAPIServer stops kube-apiserver only; etcd, and so every object,
// stays. Clients get connection errors until StartAPIServer.
func (a *APIServer) StopAPIServer() {
	a.tb.Helper()
	if out, err := a.run("stop-apiserver"); err != nil {
		a.tb.Fatalf("kubetest: stop-apiserver: %v\n%s", err, out)
	}
}

// StartAPIServer starts kube-apiserver again, on the same port and with
// the same data, and returns once it is ready.
func (a *APIServer) StartAPIServer() {
	a.tb.Helper()
	a.runOrFatal(a.tb, "start-apiserver")
}

// AdminConfig is the admin's client configuration (system:masters), a
// new copy at each call.
func (a *APIServer) AdminConfig() *rest.Config {
	a.tb.Helper()
	return a.config(a.tb, a.Kubeconfig)
}

// AdminClient is a client as the admin.
func (a *APIServer) AdminClient() kubernetes.Interface {
	a.tb.Helper()
	c, err := kubernetes.NewForConfig(a.AdminConfig())
	if err != nil {
		a.tb.Fatalf("kubetest: %v", err)
	}
	return c
}

// Client is a client with the credentials of a kubeconfig file, such as
// one from ServiceAccountKubeconfig.
func (a *APIServer) Client(t testing.TB, kubeconfig string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(a.config(t, kubeconfig))
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return c
}

func (a *APIServer) config(t testing.TB, kubeconfig string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubetest: %s: %v", kubeconfig, err)
	}
	// Tests create objects in bursts; the default 5 QPS would pace them.
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

// Kubectl runs kubectl as the admin and returns its combined output.
func (a *APIServer) Kubectl(args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(a.Bin, "kubectl"), append([]string{"--kubeconfig", a.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func fileArgs(paths []string) []string {
	var args []string
	for _, p := range paths {
		args = append(args, "-f", p)
	}
	return args
}

// ApplyFiles applies manifests (files or directories) as the admin, with
// server-side apply.
func (a *APIServer) ApplyFiles(t testing.TB, paths ...string) {
	t.Helper()
	args := append([]string{"apply", "--server-side", "--field-manager=kubetest"}, fileArgs(paths)...)
	if _, err := a.Kubectl(args...); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
}

// KubectlDryRun has the API server validate manifests (files or
// directories) without creating anything: kubectl apply --dry-run=server.
// The error holds kubectl's output.
func (a *APIServer) KubectlDryRun(paths ...string) error {
	_, err := a.Kubectl(append([]string{"apply", "--dry-run=server", "--validate=strict"}, fileArgs(paths)...)...)
	return err
}

// ServiceAccountKubeconfig creates the namespace and the ServiceAccount
// when missing, requests a token for it (TokenRequest API, valid 2 h) and
// writes a kubeconfig with that bearer token; it returns the file's path.
func (a *APIServer) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := a.AdminClient()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: namespace %s: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: serviceaccount %s/%s: %v", namespace, name, err)
	}
	expiry := int64((2 * time.Hour).Seconds())
	tr, err := c.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for %s/%s: %v", namespace, name, err)
	}
	if tr.Status.Token == "" {
		t.Fatalf("kubetest: empty token for %s/%s", namespace, name)
	}
	path := filepath.Join(a.Dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: sluice-test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: sluice-test
  context:
    cluster: sluice-test
    user: %s
    namespace: %s
current-context: sluice-test
`, a.URL, a.CAFile, "system:serviceaccount:"+namespace+":"+name, tr.Status.Token,
		"system:serviceaccount:"+namespace+":"+name, namespace)
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return path
}

// CreateNode registers a Node as a kubelet would: the well-known labels
// (hostname, os, arch, and the zone when zone is not empty), then a status
// with the InternalIP and Hostname addresses and a Ready condition. The
// pod CIDRs, when given (one per family), are spec.podCIDRs and their
// first spec.podCIDR, as the node IPAM controller allocates them. It
// returns the Node as stored.
func (a *APIServer) CreateNode(t testing.TB, name, internalIP, zone string, podCIDRs ...string) *corev1.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := a.AdminClient()
	labels := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	if zone != "" {
		labels[ZoneLabel] = zone
	}
	node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       nodeSpec(podCIDRs),
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: node %s: %v", name, err)
	}
	// The status is a subresource: a create does not set it.
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: internalIP},
			{Type: corev1.NodeHostName, Address: name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubetest", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	node, err = c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("kubetest: status of node %s: %v", name, err)
	}
	return node
}

func nodeSpec(podCIDRs []string) corev1.NodeSpec {
	if len(podCIDRs) == 0 {
		return corev1.NodeSpec{}
	}
	return corev1.NodeSpec{PodCIDR: podCIDRs[0], PodCIDRs: podCIDRs}
}
