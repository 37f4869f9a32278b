package cli

import (
	"testing"

	"github.com/sluice-lb/sluice/loader"
)

func TestCgroupRootFlag(t *testing.T) {
	c, err := parseAgentFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The default is the unified hierarchy's root where there is one,
	// and none (with the warning) where there is not.
	if want := loader.DefaultCgroupRoot(); c.cgroupRoot != want || c.cgroupDefaultMissing != (want == "") {
		t.Errorf("default cgroup root %q (missing %v), want %q", c.cgroupRoot, c.cgroupDefaultMissing, want)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cgroup-root="}, ""},
		{[]string{"--cgroup-root", "/run/x/cg"}, "/run/x/cg"},
		{[]string{"--cgroup-root", "/run/x/cg", "--cgroup-root="}, ""},
	} {
		c, err := parseAgentFlags(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if c.cgroupRoot != tc.want || c.cgroupDefaultMissing {
			t.Errorf("%q: cgroup root %q (default missing %v), want %q", tc.args, c.cgroupRoot, c.cgroupDefaultMissing, tc.want)
		}
	}
}
