package test

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// An agent started as a system starts it, under the default
// RLIMIT_MEMLOCK, creates its maps and serves. The other tests' agents
// inherit the test process's unlimited memlock, which hides whether the
// agent lifts the limit itself: kernels before 5.11 (5.10 of the VM
// matrix) charge BPF maps to it, so there an agent that does not fails to
// create its maps. From 5.11 maps are charged to the memory cgroup and
// the limit does not matter.
func TestAgentWithDefaultMemlock(t *testing.T) {
	for _, limit := range []struct {
		name  string
		bytes uint64
	}{
		{"64KiB", 64 << 10}, // the kernel's default before 5.16
		{"8MiB", 8 << 20},   // the default since
	} {
		t.Run(limit.name, func(t *testing.T) {
			c := newCluster(t, 1, "auto")
			c.agentEnv = []string{fmt.Sprintf("%s=%d", agenttest.MemlockEnv, limit.bytes)}
			c.write("whoami.yaml", whoamiManifest(1))
			c.startAgent()

			log, err := os.ReadFile(c.agentLog)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("RLIMIT_MEMLOCK set to %d bytes", limit.bytes); !strings.Contains(string(log), want) {
				t.Fatalf("the agent did not start under the limit: no %q in its log", want)
			}
			if who, err := c.ask("tcp", vip+":80"); err != nil || who != "backend-1" {
				t.Fatalf("request through the VIP: answered by %q (%v), want backend-1", who, err)
			}
			major, minor := testenv.KernelVersion()
			t.Logf("kernel %d.%d, agent started under %d bytes of memlock, now: %s", major, minor, limit.bytes, memlockOf(c.agent.Pid()))
		})
	}
}

// memlockOf returns the "Max locked memory" line of a process's limits.
func memlockOf(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Max locked memory") {
			return strings.Join(strings.Fields(strings.TrimPrefix(sc.Text(), "Max locked memory")), " ")
		}
	}
	return "unknown"
}
