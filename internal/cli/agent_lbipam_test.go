package cli

import (
	"strings"
	"testing"
)

func TestAgentLBPoolFlag(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	c, err := parseAgentFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.lbPool.Empty() || c.namespace != "kube-system" {
		t.Errorf("default pool %q, namespace %q: want off, kube-system", c.lbPool, c.namespace)
	}
	t.Setenv("POD_NAMESPACE", "sluice")
	c, err = parseAgentFlags([]string{"--lb-ip-pool", "192.168.50.200/29, 10.0.0.8/31"})
	if err != nil {
		t.Fatal(err)
	}
	if c.lbPool.String() != "192.168.50.200/29,10.0.0.8/31" || c.namespace != "sluice" {
		t.Errorf("pool %q, namespace %q", c.lbPool, c.namespace)
	}
	// The DaemonSet passes an empty key as --lb-ip-pool=.
	if c, err := parseAgentFlags([]string{"--lb-ip-pool="}); err != nil || !c.lbPool.Empty() {
		t.Errorf("--lb-ip-pool= : %v, %q: want off", err, c.lbPool)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--lb-ip-pool", "fd00::/64"}, "not an IPv4 CIDR"},
		{[]string{"--lb-ip-pool", "10.0.0.0/24,10.0.0.0/25"}, "overlaps"},
		{[]string{"--lb-ip-pool", "10.0.0.0/24", "--manifests", "/tmp"}, "needs an API server"},
	} {
		if _, err := parseAgentFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

func TestWriteL2Table(t *testing.T) {
	var b strings.Builder
	if err := writeL2Table(&b, []l2Row{{Device: "eth0", Ifindex: 2, Addr: "192.168.50.201", MAC: "02:00:00:00:00:01"}}); err != nil {
		t.Fatal(err)
	}
	want := "ADDRESS         DEVICE  IFINDEX  MAC\n192.168.50.201  eth0    2        02:00:00:00:00:01\n"
	if b.String() != want {
		t.Errorf("table\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := writeL2Table(&b, nil); err != nil || !strings.Contains(b.String(), "announces no load-balancer address") {
		t.Errorf("empty table %q (%v)", b.String(), err)
	}
}
