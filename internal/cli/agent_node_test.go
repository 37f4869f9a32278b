package cli

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --nodeport-addresses and --snat-port-range: their defaults, and a bad
// value refused at start with an error naming the flag and what is wrong.
func TestAgentNodeFlags(t *testing.T) {
	c, err := parseAgentFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.nodePortAddresses != "primary" || c.snatPorts != (portRange{61000, 65535}) {
		t.Errorf("defaults: --nodeport-addresses %q, --snat-port-range %v", c.nodePortAddresses, c.snatPorts)
	}
	c, err = parseAgentFlags([]string{"--nodeport-addresses", "192.168.0.0/16, 10.0.0.0/8", "--snat-port-range", "40000-40000"})
	if err != nil {
		t.Fatal(err)
	}
	if c.nodePortAddresses != "192.168.0.0/16, 10.0.0.0/8" || c.snatPorts != (portRange{40000, 40000}) {
		t.Errorf("parsed --nodeport-addresses %q, --snat-port-range %v", c.nodePortAddresses, c.snatPorts)
	}
	for _, bad := range []struct{ flag, value, want string }{
		{"--snat-port-range", "61000", `--snat-port-range "61000": want two ports, min-max`},
		{"--snat-port-range", "65535-61000", `--snat-port-range "65535-61000": the first port is above the second`},
		{"--snat-port-range", "0-100", `--snat-port-range "0-100": "0" is not a port in 1-65535`},
		{"--snat-port-range", "61000-65536", `--snat-port-range "61000-65536": "65536" is not a port in 1-65535`},
		{"--snat-port-range", "a-b", `"a" is not a port in 1-65535`},
		{"--snat-port-range", "1-2-3", `"2-3" is not a port`},
		{"--nodeport-addresses", "192.168.0.0/33", `--nodeport-addresses`},
		{"--nodeport-addresses", "eth0", `"eth0"`},
	} {
		_, err := parseAgentFlags([]string{bad.flag, bad.value})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %q: error %v, want one containing %q", bad.flag, bad.value, err, bad.want)
		}
	}
}

// The SNAT ports overlapping the node's ephemeral ports is warned about,
// with both ranges; apart, or the file unreadable, nothing.
func TestWarnLocalPortOverlap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ip_local_port_range")
	for _, c := range []struct {
		local string
		snat  portRange
		warn  bool
	}{
		{"32768\t60999\n", portRange{61000, 65535}, false}, // the kernel's default
		{"32768\t61000\n", portRange{61000, 65535}, true},  // one port shared
		{"1024\t65535\n", portRange{61000, 65535}, true},
		{"62000\t63000\n", portRange{61000, 65535}, true}, // inside
		{"32768\t60999\n", portRange{20000, 32768}, true},
	} {
		if err := os.WriteFile(path, []byte(c.local), 0o644); err != nil {
			t.Fatal(err)
		}
		var logs logBuffer
		if got := warnLocalPortOverlap(logs.logger(), c.snat, path); got != c.warn {
			t.Errorf("local %q, SNAT %v: warned %v, want %v", c.local, c.snat, got, c.warn)
		}
		if c.warn && !strings.Contains(logs.String(), "snat-port-range="+c.snat.String()) {
			t.Errorf("warning without the ranges: %s", logs.String())
		}
	}
	var logs logBuffer
	if warnLocalPortOverlap(logs.logger(), portRange{1, 65535}, filepath.Join(dir, "missing")) {
		t.Errorf("warned without the file")
	}
	// The agent's own namespace's file reads (this machine's range).
	if _, err := os.Stat(localPortRange); err == nil {
		warnLocalPortOverlap(logs.logger(), portRange{1, 65535}, localPortRange)
		if !strings.Contains(logs.String(), "ip_local_port_range=") {
			t.Errorf("the whole port range does not overlap %s: %s", localPortRange, logs.String())
		}
	}
}

// The in-cluster API address inside the service CIDR gets one warning
// naming the fix; an address outside it, or none, gets none.
func TestWarnServiceAPIHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		warn bool
	}{
		{"10.96.0.1", true},
		{"192.168.0.10", false},
		{"", false},
		{"api.example", false},
	} {
		var buf bytes.Buffer
		c := &agentConfig{serviceCIDR: netip.MustParsePrefix("10.96.0.0/12"), log: slog.New(slog.NewTextHandler(&buf, nil))}
		c.warnServiceAPIHost(tc.host)
		if got := strings.Contains(buf.String(), "KUBERNETES_SERVICE_HOST"); got != tc.warn {
			t.Errorf("host %q: warned %v (%q), want %v", tc.host, got, buf.String(), tc.warn)
		}
	}
}
