//go:build cluster

package cluster

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// conformanceFocus is Kubernetes' own Service conformance specs.
const conformanceFocus = `\[sig-network\] Services .*\[Conformance\]`

// conformanceSpecs is how many specs that focus selects in v1.37.2: a focus
// that matches fewer (a renamed spec, a wrong e2e.test) must not pass.
const conformanceSpecs = 15

// Kubernetes' e2e.test, the Service conformance specs, with sluice as the
// only service proxy. CLUSTER_E2E_FOCUS widens the focus (for the table of
// the README); the count is then only reported.
func TestServiceConformance(t *testing.T) {
	focus, want := conformanceFocus, conformanceSpecs
	if f := os.Getenv("CLUSTER_E2E_FOCUS"); f != "" {
		focus, want = f, 0
	}
	report := filepath.Join(lab["CLUSTER_RUN"], "e2e")
	if err := os.MkdirAll(report, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--kubeconfig=" + lab["KUBECONFIG"],
		"--kubectl-path=" + lab["CLUSTER_BIN"] + "/kubectl",
		"--provider=local",
		"--report-dir=" + report,
		"--ginkgo.focus=" + focus,
		"--ginkgo.skip=" + os.Getenv("CLUSTER_E2E_SKIP"),
		"--ginkgo.no-color",
		"--ginkgo.timeout=50m",
	}
	t0 := time.Now()
	out, err := inClient(55*time.Minute, append([]string{lab["CLUSTER_BIN"] + "/e2e.test"}, args...)...)
	took := time.Since(t0)
	log := filepath.Join(report, "e2e.log")
	if werr := os.WriteFile(log, []byte(out), 0o644); werr != nil {
		t.Error(werr)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*\[FAIL\].*$`).FindAllString(out, -1) {
		t.Log(m)
	}
	ran := regexp.MustCompile(`Ran (\d+) of \d+ Specs`).FindStringSubmatch(out)
	if ran == nil {
		t.Fatalf("e2e.test ran no specs (log %s): %v", log, err)
	}
	n, _ := strconv.Atoi(ran[1])
	t.Logf("%s in %s (log %s)", ran[0], took.Round(time.Second), log)
	if err != nil {
		t.Fatalf("e2e.test failed (log %s)", log)
	}
	if want != 0 && n != want {
		t.Fatalf("ran %d specs, want %d: the focus %q selects other specs than v1.37.2's", n, want, focus)
	}
}
