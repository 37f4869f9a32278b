// Package agenttest runs the sluice agent for the end-to-end suites: the
// test binary re-executed as the sluice command (its TestMain checks
// RunAsSluice), inside a lab node's network namespace, so the suites need
// no other binary.
package agenttest

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
)

// RunAsSluice, set to 1, makes a re-executed test binary the sluice command.
const RunAsSluice = "SLUICE_TEST_RUN_AS_SLUICE"

// MemlockEnv, in the re-executed agent's environment, is the
// RLIMIT_MEMLOCK (soft and hard, in bytes) it starts under, as a system's
// default would have it. The test process itself runs without the limit
// (testenv.Privileged lifts it), which would hide whether the agent lifts
// it. Set for a whole run (SLUICE_TEST_MEMLOCK=65536 go test ./test/),
// every agent starts under it.
const MemlockEnv = "SLUICE_TEST_MEMLOCK"

// Main is a suite's TestMain: the sluice command when re-executed as the
// agent, else the tests. Its result is the exit status.
func Main(m *testing.M) int {
	if os.Getenv(RunAsAsker) == "1" {
		return ask(os.Args[1:])
	}
	if os.Getenv(RunAsSluice) != "1" {
		return m.Run()
	}
	if v := os.Getenv(MemlockEnv); v != "" {
		if err := setMemlock(v); err != nil {
			fmt.Fprintf(os.Stderr, "%s=%s: %v\n", MemlockEnv, v, err)
			return 2
		}
	}
	return cli.Main(os.Args[1:])
}

// setMemlock sets this process's RLIMIT_MEMLOCK and says so on stderr (the
// agent's log).
func setMemlock(v string) error {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return err
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		return fmt.Errorf("set RLIMIT_MEMLOCK: %w", err)
	}
	fmt.Fprintf(os.Stderr, "sluice test: RLIMIT_MEMLOCK set to %d bytes\n", n)
	return nil
}

// Agent is one running agent (or another sluice command).
type Agent struct{ cmd *exec.Cmd }

// Start runs `sluice args...` in ns with env added to the test's own,
// appending its output to logPath.
func Start(t testing.TB, ns *netlab.NS, logPath string, env []string, args ...string) *Agent {
	t.Helper()
	return StartIn(t, ns, nil, logPath, env, args...)
}

// StartIn is Start with the process born in the cgroup cg (when not nil),
// as a hostNetwork pod runs in its node's namespace and in a cgroup below
// the node's.
func StartIn(t testing.TB, ns *netlab.NS, cg *netlab.Cgroup, logPath string, env []string, args ...string) *Agent {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if len(args) > 0 && args[0] == "agent" {
		// Socket-level load balancing attaches to a cgroup, which by
		// default is this machine's root: a suite never does that, and
		// one that tests it gives its own cgroup (a later flag wins).
		args = append([]string{"agent", "--cgroup-root="}, args[1:]...)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(append(os.Environ(), RunAsSluice+"=1"), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := ns.Start
	if cg != nil {
		start = func(cmd *exec.Cmd) error { return ns.StartInCgroup(cg, cmd) }
	}
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	return &Agent{cmd: cmd}
}

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Kill kills the agent with SIGKILL, as a crash or OOM kill would. A nil
// agent is none.
func (a *Agent) Kill() {
	if a == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
}

// Stop stops the agent with SIGTERM, as a rolling update would, and waits
// for it to exit. A nil agent is none.
func (a *Agent) Stop() {
	if a == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	a.cmd.Wait()
}

// Teardown removes what a lab node's agent left (its pins, from inside the
// node) and the topology, and shows the agent's log when t failed.
func Teardown(t testing.TB, topo *netlab.Topology, pinDir, agentLog string) {
	Uninstall(t, topo.Node, pinDir)
	topo.Delete()
	ShowLogOnFailure(t, "agent", agentLog)
}

// Uninstall removes what the agent pinned under pinDir attached in node,
// from inside it, and its pins.
func Uninstall(t testing.TB, node *netlab.NS, pinDir string) {
	if err := node.Do(func() error { return loader.Uninstall(pinDir, slog.Default()) }); err != nil {
		t.Errorf("uninstall %s in %s: %v", pinDir, node.Name, err)
	}
}

// ShowLogOnFailure logs the file at path, named what, when t failed.
func ShowLogOnFailure(t testing.TB, what, path string) {
	if t.Failed() {
		if b, err := os.ReadFile(path); err == nil {
			t.Logf("%s log:\n%s", what, b)
		}
	}
}

// Counter reads one datapath counter, by reason name, from the pinned maps.
func Counter(t testing.TB, pinDir, reason string) uint64 {
	t.Helper()
	n, ok := Counters(t, pinDir)[reason]
	if !ok {
		t.Fatalf("no counter %q", reason)
	}
	return n
}

// Counters reads every datapath counter, by reason name, from the pinned
// maps.
func Counters(t testing.TB, pinDir string) map[string]uint64 {
	t.Helper()
	dp, closeMaps, err := loader.OpenPinnedMaps(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeMaps()
	packets, err := dp.Packets()
	if err != nil {
		t.Fatal(err)
	}
	return packets
}

// Ask sends one whoami request from inside ns.
func Ask(ns *netlab.NS, proto, addr string, timeout time.Duration) (string, error) {
	var who string
	err := ns.Do(func() (err error) {
		who, err = whoami.Ask(proto, addr, testenv.Scaled(timeout))
		return err
	})
	return who, err
}
