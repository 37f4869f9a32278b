// Package agenttest runs the sluice agent for the end-to-end suites: the
// test binary re-executed as the sluice command (its TestMain checks
// RunAsSluice), inside a lab node's network namespace, so the suites need
// no other binary.
package agenttest

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	if q := os.Getenv(AskEnv); q != "" {
		return askMain(q)
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

// Agent is one running agent.
type Agent struct{ cmd *exec.Cmd }

// Start runs `sluice args...` in ns with env added to the test's own,
// appending its output to logPath.
func Start(t testing.TB, ns *netlab.NS, logPath string, env []string, args ...string) *Agent {
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
	if err := ns.Start(cmd); err != nil {
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

// Teardown removes what a lab node's agent left (its pins, from inside the
// node) and the topology, and shows the agent's log when t failed.
func Teardown(t testing.TB, topo *netlab.Topology, pinDir, agentLog string) {
	if err := topo.Node.Do(func() error { return loader.Uninstall(pinDir, slog.Default()) }); err != nil {
		t.Errorf("uninstall: %v", err)
	}
	topo.Delete()
	if t.Failed() {
		if b, err := os.ReadFile(agentLog); err == nil {
			t.Logf("agent log:\n%s", b)
		}
	}
}

// Counter reads one datapath counter, by reason name, from the pinned maps.
func Counter(t testing.TB, pinDir, reason string) uint64 {
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
	n, ok := packets[reason]
	if !ok {
		t.Fatalf("no counter %q", reason)
	}
	return n
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

// AskEnv, "PROTO ADDR TIMEOUT" in a re-executed test binary's environment,
// makes it one whoami client: the answer on stdout, an error on stderr.
const AskEnv = "SLUICE_TEST_ASK"

func askMain(q string) int {
	f := strings.Fields(q)
	if len(f) != 3 {
		fmt.Fprintf(os.Stderr, "%s=%q: want PROTO ADDR TIMEOUT\n", AskEnv, q)
		return 2
	}
	timeout, err := time.ParseDuration(f[2])
	if err == nil {
		var who string
		if who, err = whoami.Ask(f[0], f[1], timeout); err == nil {
			fmt.Println(who)
			return 0
		}
	}
	fmt.Fprint(os.Stderr, err)
	return 1
}

// AskFromCgroup sends one whoami request from a process of its own, born in
// the cgroup (a host-network program of the node, when ns is the node's
// namespace), so that cgroup socket programs see its calls; cgroup ""
// leaves it in the test's own cgroup.
func AskFromCgroup(t testing.TB, ns *netlab.NS, cgroup, proto, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", AskEnv, proto, addr, testenv.Scaled(timeout)))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cgroup != "" {
		f, err := os.Open(cgroup)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	err = ns.Do(cmd.Run)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return "", errors.New(stderr.String())
	}
	if err != nil {
		t.Fatalf("whoami client: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}
