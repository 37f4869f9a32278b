package cli

import (
	"testing"
	"time"

	"github.com/sluice-lb/sluice/control/conntrack"
)

// The conntrack flags default to the datapath's lifetimes (which
// control/conntrack checks against the C defaults) and are checked.
func TestAgentConntrackFlags(t *testing.T) {
	c, err := parseAgentFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ct.timeouts != conntrack.DefaultTimeouts() || c.ct.maxFlows != 0 || c.ct.memoryPercent != conntrack.DefaultMemoryPercent {
		t.Errorf("defaults %+v", c.ct)
	}
	c, err = parseAgentFlags([]string{"--ct-max", "1000", "--conntrack-udp-timeout", "5s", "--conntrack-tcp-timeout-established", "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ct.timeouts.UDP != 5*time.Second || c.ct.timeouts.TCPEstablished != time.Hour {
		t.Errorf("timeouts %+v", c.ct.timeouts)
	}
	if s, err := c.ct.size(); err != nil || s.Entries != 2000 {
		t.Errorf("--ct-max 1000: %+v %v, want 2000 entries", s, err)
	}
	for _, bad := range [][]string{
		{"--conntrack-tcp-timeout-close", "0s"},
		{"--conntrack-udp-timeout", "100ms"},
		{"--conntrack-gc-interval", "1s"},
		{"--ct-max", "4294967295"},
	} {
		if _, err := parseAgentFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
