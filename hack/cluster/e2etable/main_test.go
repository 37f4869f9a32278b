package main

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// A ginkgo JUnit report: specs passed, failed, skipped and timed out are
// read by their text; suite nodes and pending specs are not.
func TestRead(t *testing.T) {
	const junit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="0" errors="0" failures="1" time="10">
  <testsuite name="Kubernetes e2e suite" package="/bin" tests="5" failures="1">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="passed" time="3"></testcase>
    <testcase name="[It] [sig-network] Services should be rejected when no endpoints exist" classname="Kubernetes e2e suite" status="failed" time="3">
      <failure message="connection timed out" type="failed">boom</failure>
    </testcase>
    <testcase name="[It] [sig-network] Services should allow creating a basic SCTP service" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] Services should work after the service has been recreated" classname="Kubernetes e2e suite" status="timedout" time="3"></testcase>
    <testcase name="[It] [sig-network] Services a pending one" classname="Kubernetes e2e suite" status="pending" time="0"></testcase>
  </testsuite>
</testsuites>`
	path := filepath.Join(t.TempDir(), "junit.xml")
	if err := os.WriteFile(path, []byte(junit), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"[sig-network] Services should serve a basic endpoint from pods [Conformance]": "passed",
		"[sig-network] Services should be rejected when no endpoints exist":            "failed",
		"[sig-network] Services should allow creating a basic SCTP service":            "skipped",
		"[sig-network] Services should work after the service has been recreated":      "failed (timedout)",
	}
	if !maps.Equal(got, want) {
		t.Errorf("read\n got %v\nwant %v", got, want)
	}
	if err := os.WriteFile(path, []byte(`<testsuites><testsuite name="x"></testsuite></testsuites>`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := read(path); err == nil {
		t.Error("a report without specs read without error")
	}
}

func TestTable(t *testing.T) {
	got := table([]string{"a", "b"}, map[string]map[string]string{
		"s1": {"a": "passed", "b": "failed (timedout)"},
		"s2": {"a": "skipped", "b": "skipped"},
		"s3": {"a": "skipped", "b": "passed"},
		"s4": {"a": "passed"},
	})
	want := "| spec | a | b |\n|---|---|---|\n" +
		"| s1 | passed | failed (timedout) |\n" +
		"| s3 | skipped | passed |\n" +
		"| s4 | passed | not run |\n" +
		"\na: 2 passed, 0 failed, 2 skipped" +
		"\nb: 1 passed, 1 failed, 1 skipped\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}
