package agenttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
)

// RunAsAsker, set to 1, makes a re-executed test binary a one-shot whoami
// client: `PROTO ADDR TIMEOUT` as arguments, the answer's name and the
// address the server saw on stdout. It is how a test asks from a process of
// its own, one born in a node's cgroup (a hostNetwork client), which a
// goroutine of the test cannot be.
const RunAsAsker = "SLUICE_TEST_RUN_AS_ASKER"

func ask(args []string) int {
	if len(args) > 0 && args[0] == "storm" {
		return storm(args[1:])
	}
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "asker: want PROTO ADDR TIMEOUT")
		return 2
	}
	timeout, err := time.ParseDuration(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "asker:", err)
		return 2
	}
	a, err := whoami.AskAnswer(args[0], args[1], timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s %s\n", a.Hostname, a.Remote)
	return 0
}

// AskFrom asks the whoami server at addr from a new process in ns, born in
// the cgroup cg (when not nil), and returns the answer.
func AskFrom(ns *netlab.NS, cg *netlab.Cgroup, proto, addr string, timeout time.Duration) (whoami.Answer, error) {
	self, err := os.Executable()
	if err != nil {
		return whoami.Answer{}, err
	}
	timeout = testenv.Scaled(timeout)
	cmd := exec.Command(self, proto, addr, timeout.String())
	cmd.Env = append(os.Environ(), RunAsAsker+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := ns.Start
	if cg != nil {
		start = func(cmd *exec.Cmd) error { return ns.StartInCgroup(cg, cmd) }
	}
	if err := start(cmd); err != nil {
		return whoami.Answer{}, err
	}
	if err := cmd.Wait(); err != nil {
		return whoami.Answer{}, fmt.Errorf("ask %s %s from %s: %w: %s", proto, addr, ns.Name, err, strings.TrimSpace(errb.String()))
	}
	f := strings.Fields(out.String())
	if len(f) != 2 {
		return whoami.Answer{}, fmt.Errorf("ask %s %s from %s: answer %q", proto, addr, ns.Name, out.String())
	}
	return whoami.Answer{Hostname: f[0], Remote: f[1]}, nil
}

// AskAnswer asks from this process, with sockets made inside ns (a pod, the
// external client), and returns the whole answer.
func AskAnswer(ns *netlab.NS, proto, addr string, timeout time.Duration) (whoami.Answer, error) {
	var a whoami.Answer
	err := ns.Do(func() (err error) {
		a, err = whoami.AskAnswer(proto, addr, testenv.Scaled(timeout))
		return err
	})
	return a, err
}
