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
		return errors.New("usage: sluice lab up [--nodes N] [--backends N] | down | traffic [--requests N]")
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
		n := fs.Int("backends", 3, "number of backend pods (spread over the nodes)")
		nodes := fs.Int("nodes", 1, "number of nodes, each with its own agent, on one underlay")
		attach := fs.String("attach", "auto", "agent attach mode: auto, tcx or tc")
		cgroupRoot := fs.Bool("agent-cgroup-root", false, "pass each agent --cgroup-root with its node's cgroup (nodes > 1)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *nodes == 1 {
			return labUp(*n, *attach)
		}
		if *nodes < 1 || *nodes > 80 || *n < 1 || *n > 250 {
			return fmt.Errorf("lab up: --nodes %d --backends %d: want 1-80 nodes and 1-250 backends", *nodes, *n)
		}
		return labUpMulti(labMultiOptions{nodes: *nodes, backends: *n, attach: *attach, cgroupRoot: *cgroupRoot})
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

// labManifests is the single-node demo, every backend on the one node.
func labManifests(n int) string {
	eps := make([]labEndpoint, n)
	for i := range eps {
		eps[i] = labEndpoint{netlab.BackendAddr(i + 1).String(), labPrefix + "-node"}
	}
	return labServices(eps)
}

// labPrepare removes any previous lab and makes the manifests directory;
// it returns this binary (each agent runs it) and that directory.
func labPrepare() (self, manifestDir string, err error) {
	if err := labDown(); err != nil {
		return "", "", fmt.Errorf("clean up the previous lab: %w", err)
	}
	if self, err = os.Executable(); err != nil {
		return "", "", err
	}
	manifestDir = filepath.Join(labStateDir, "manifests")
	return self, manifestDir, os.MkdirAll(manifestDir, 0o755)
}

func labUp(n int, attach string) error {
	self, manifestDir, err := labPrepare()
	if err != nil {
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
	return labStartWith(ns.Start, name, bin, args...)
}

// labStartWith is labStart with the way to start the process given (in a
// namespace and a cgroup, say).
func labStartWith(start func(*exec.Cmd) error, name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(labStateDir, name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := start(cmd); err != nil {
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
	// The nodes' cgroups hold only what the lab started there: whatever
	// outlived its pid file goes with them.
	if netlab.IsCgroup2(labCgroupDir) {
		if err := netlab.RemoveCgroup(filepath.Join(labCgroupDir, labPrefix)); err != nil {
			return err
		}
	}
	if err := labUninstall(labPrefix+"-node", labPinDir); err != nil {
		return err
	}
	// A multi-node lab's nodes, found by their namespaces or, once these
	// are gone, by the pins their agents left.
	nodes, _ := filepath.Glob(filepath.Join("/run/netns", labPrefix+"-node-*"))
	pins, _ := filepath.Glob(labPinDir + "-node-*")
	for _, f := range append(nodes, pins...) {
		i, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(f), filepath.Base(labPinDir)+"-node-"))
		if err != nil {
			continue
		}
		if err := labUninstall(fmt.Sprintf("%s-node-%d", labPrefix, i), labNodePinDir(i)); err != nil {
			return err
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), labPrefix+"-") {
			if err := netlab.DeleteNS(e.Name()); err != nil {
				return err
			}
		}
	}
	// Unmounted before the state dir goes: removing a tree inside a
	// cgroup2 mount would remove cgroups.
	if err := netlab.UnmountCgroup2(labCgroupDir); err != nil {
		return err
	}
	return os.RemoveAll(labStateDir)
}

// labUninstall removes what the agent pinned under pinDir attached in the
// node namespace nodeNS, from inside it, or only its pins when the
// namespace is gone.
func labUninstall(nodeNS, pinDir string) error {
	if !netlab.Exists(nodeNS) {
		return loader.Uninstall(pinDir, slog.Default())
	}
	node, err := netlab.OpenNS(nodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	return node.Do(func() error { return loader.Uninstall(pinDir, slog.Default()) })
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
// shows which backend answered each; with more than one node, also the
// client address each backend saw.
func labTraffic(n int) error {
	multi := labNodes() > 1
	clientNS := labPrefix + "-client"
	if multi {
		clientNS = labMultiClient
	}
	client, err := netlab.OpenNS(clientNS)
	if err != nil {
		return fmt.Errorf("%w (run `sluice lab up` first)", err)
	}
	defer client.Close()
	vip := net.JoinHostPort(labVIP, strconv.Itoa(labPort))
	for _, proto := range []string{"tcp", "udp"} {
		tally := map[string]int{}
		for range n {
			var a whoami.Answer
			err := client.Do(func() error {
				var err error
				a, err = whoami.AskAnswer(proto, vip, 2*time.Second)
				return err
			})
			if err != nil {
				tally["error: "+err.Error()]++
				continue
			}
			key := a.Hostname
			if multi {
				key = fmt.Sprintf("%-18s saw %-15s", a.Hostname, a.RemoteIP())
			}
			tally[key]++
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
