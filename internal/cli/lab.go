package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
)

// The lab's fixed names: one lab per machine.
const (
	labPrefix   = "sluice-lab"
	labStateDir = "/run/sluice-lab"
	labPinDir   = loader.DefaultBPFFS + "/sluice-lab"
	labVIP      = "10.96.0.10"
	labEmptyVIP = "10.96.0.20"
	labPort     = 80
	labBackPort = 8080
)

func runLab(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: sluice lab up [--backends N] | down | traffic [--requests N]")
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
		n := fs.Int("backends", 3, "number of backend pods")
		attach := fs.String("attach", "auto", "agent attach mode: auto, tcx or tc")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return labUp(*n, *attach)
	case "down":
		return labDown()
	case "traffic":
		fs := flag.NewFlagSet("lab traffic", flag.ContinueOnError)
		n := fs.Int("requests", 30, "requests per protocol")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return labTraffic(*n)
	}
	return fmt.Errorf("unknown lab command %q", args[0])
}

// labManifests is the demo: a service over every backend (TCP and UDP) and
// a service without endpoints, whose clients are refused at once.
func labManifests(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: whoami, namespace: demo}
spec:
  clusterIP: %s
  ports:
  - {name: http, port: %d, protocol: TCP, targetPort: %d}
  - {name: udp, port: %d, protocol: UDP, targetPort: %d}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: whoami-1
  namespace: demo
  labels: {kubernetes.io/service-name: whoami}
addressType: IPv4
ports:
- {name: http, port: %d, protocol: TCP}
- {name: udp, port: %d, protocol: UDP}
endpoints:
`, labVIP, labPort, labBackPort, labPort, labBackPort, labBackPort, labBackPort)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}, nodeName: %s-node}\n", netlab.BackendAddr(i), labPrefix)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: nobody-home, namespace: demo}
spec:
  clusterIP: %s
  ports:
  - {name: http, port: %d, protocol: TCP}
`, labEmptyVIP, labPort)
	return b.String()
}

func labUp(n int, attach string) error {
	if err := labDown(); err != nil {
		return fmt.Errorf("clean up the previous lab: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	manifestDir := filepath.Join(labStateDir, "manifests")
	if err := os.MkdirAll(manifestDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(manifestDir, "whoami.yaml"), []byte(labManifests(n)), 0o644); err != nil {
		return err
	}
	topo, err := netlab.NewTopology(labPrefix, n)
	if err != nil {
		return err
	}
	for i, be := range topo.Backends {
		name := fmt.Sprintf("backend-%d", i+1)
		if err := labStart(be, name, self, "whoami", "--listen", fmt.Sprintf("0.0.0.0:%d", labBackPort), "--name", name); err != nil {
			return err
		}
	}
	if err := labStart(topo.Node, "agent", self, "agent", "--manifests", manifestDir,
		"--pin-dir", labPinDir, "--node-name", labPrefix+"-node", "--service-cidr", "10.96.0.0/12",
		"--attach", attach,
		// The lab's node is a namespace of this machine, whose cgroups
		// are the machine's own: the lab serves its pods only.
		"--cgroup-root="); err != nil {
		return err
	}
	if err := WaitServing(topo.Node, DefaultHealthzAddr, 10*time.Second); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, filepath.Join(labStateDir, "agent.log"))
	}
	fmt.Printf(`lab up: node %[1]s-node, client %[1]s-client, %[2]d backends running whoami on :%[3]d
  service demo/whoami       %[4]s:%[5]d TCP+UDP -> %[2]d backends
  service demo/nobody-home  %[6]s:%[5]d TCP (no endpoints: connections are refused)
  manifests: %[7]s (edit them: the agent applies changes at once)
  agent log: %[8]s
try:
  sluice lab traffic
  sluice lb list --pin-dir %[9]s
  bpftool map dump pinned %[9]s/lb4_services
  ip netns exec %[1]s-client curl -s http://%[4]s/
`, labPrefix, n, labBackPort, labVIP, labPort, labEmptyVIP, manifestDir, filepath.Join(labStateDir, "agent.log"), labPinDir)
	return nil
}

// labStart starts a detached process in a namespace, its output in
// labStateDir/NAME.log and its pid in labStateDir/NAME.pid.
func labStart(ns *netlab.NS, name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(labStateDir, name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.Start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return os.WriteFile(filepath.Join(labStateDir, name+".pid"), []byte(strconv.Itoa(pid)), 0o644)
}

func labDown() error {
	pids, _ := filepath.Glob(filepath.Join(labStateDir, "*.pid"))
	for _, f := range pids {
		b, _ := os.ReadFile(f)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			stopProcess(pid)
		}
	}
	if netlab.Exists(labPrefix + "-node") {
		node, err := netlab.OpenNS(labPrefix + "-node")
		if err == nil {
			err = node.Do(func() error { return loader.Uninstall(labPinDir, slog.Default()) })
			node.Close()
			if err != nil {
				return err
			}
		}
	} else if err := loader.Uninstall(labPinDir, slog.Default()); err != nil {
		return err
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), labPrefix+"-") {
			if err := netlab.DeleteNS(e.Name()); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(labStateDir)
}

func stopProcess(pid int) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	if p.Signal(syscall.SIGTERM) != nil {
		return
	}
	for range 50 {
		if p.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Signal(syscall.SIGKILL)
}

// labTraffic sends requests from the client pod to the demo services and
// shows which backend answered each.
func labTraffic(n int) error {
	client, err := netlab.OpenNS(labPrefix + "-client")
	if err != nil {
		return fmt.Errorf("%w (run `sluice lab up` first)", err)
	}
	defer client.Close()
	vip := net.JoinHostPort(labVIP, strconv.Itoa(labPort))
	for _, proto := range []string{"tcp", "udp"} {
		tally := map[string]int{}
		for range n {
			var who string
			err := client.Do(func() error {
				var err error
				who, err = whoami.Ask(proto, vip, 2*time.Second)
				return err
			})
			if err != nil {
				tally["error: "+err.Error()]++
				continue
			}
			tally[who]++
		}
		fmt.Printf("%d %s requests to %s:\n", n, strings.ToUpper(proto), vip)
		keys := make([]string, 0, len(tally))
		for k := range tally {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  %-12s %3d %s\n", k, tally[k], strings.Repeat("#", tally[k]))
		}
	}
	empty := net.JoinHostPort(labEmptyVIP, strconv.Itoa(labPort))
	var took time.Duration
	err = client.Do(func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp", empty, 2*time.Second)
		took = time.Since(start)
		if c != nil {
			c.Close()
		}
		return err
	})
	fmt.Printf("TCP connect to %s (no endpoints): %v after %s\n", empty, err, took.Round(time.Microsecond))
	return nil
}
