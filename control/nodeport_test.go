package control

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func addrList(s string) []netip.Addr {
	var out []netip.Addr
	for f := range strings.FieldsSeq(s) {
		out = append(out, netip.MustParseAddr(f))
	}
	return out
}

// Rule 18: which local addresses serve NodePorts.
func TestNodePortAddresses(t *testing.T) {
	internal := addrList("192.168.1.10 fd00::10 10.0.0.5 192.168.1.10")
	local := addrList("127.0.0.1 127.0.1.1 192.168.1.10 192.168.2.10 10.0.0.5 172.17.0.1 fd00::10 ::ffff:192.168.3.10")
	cases := []struct {
		rule, flag string
		want       string // space separated
		err        string // substring; "" for none
	}{
		{rule: "18: unset: the IPv4 InternalIPs, sorted and unique", flag: "", want: "10.0.0.5 192.168.1.10"},
		{rule: "18: primary: the IPv4 InternalIPs", flag: " primary ", want: "10.0.0.5 192.168.1.10"},
		{rule: "18: CIDRs: the local addresses inside any", flag: "192.168.0.0/16, 10.0.0.0/8", want: "10.0.0.5 192.168.1.10 192.168.2.10 192.168.3.10"},
		{rule: "6, 18: CIDRs are parsed leniently and masked", flag: " 192.168.002.1/24 ", want: "192.168.2.10"},
		{rule: "18: 0.0.0.0/0 is every address but loopback", flag: "0.0.0.0/0", want: "10.0.0.5 172.17.0.1 192.168.1.10 192.168.2.10 192.168.3.10"},
		{rule: "18: loopback only through a CIDR inside 127.0.0.0/8", flag: "127.0.0.0/8", want: "127.0.0.1 127.0.1.1"},
		{rule: "18: a CIDR inside 127.0.0.0/8 enables only what it holds", flag: "127.0.0.1/32,172.16.0.0/12", want: "127.0.0.1 172.17.0.1"},
		{rule: "18: a CIDR matching no local address: none", flag: "203.0.113.0/24", want: ""},
		{rule: "3, 18: an IPv6-only list leaves IPv4 to the primary addresses", flag: "fd00::/8", want: "10.0.0.5 192.168.1.10"},
		{rule: "18: empty entries are skipped", flag: "10.0.0.0/8,,", want: "10.0.0.5"},
		{rule: "18: an unparsable CIDR is an error naming it", flag: "10.0.0.0/8,10.0.0.1", err: `"10.0.0.1" is not a CIDR`},
		{rule: "18: junk is an error naming it", flag: "lan", err: `"lan" is not a CIDR`},
		{rule: "18: primary cannot be mixed with CIDRs", flag: "primary,10.0.0.0/8", err: "cannot be combined"},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			got, err := NodePortAddresses(c.flag, internal, local)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("NodePortAddresses(%q) = %v, %v; want error containing %q", c.flag, got, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NodePortAddresses(%q): %v", c.flag, err)
			}
			if want := addrList(c.want); !slices.Equal(got, want) {
				t.Errorf("NodePortAddresses(%q) = %v, want %v", c.flag, got, want)
			}
		})
	}
	// Loopback InternalIPs never serve (rule 18).
	if got, _ := NodePortAddresses("", addrList("127.0.0.1 192.168.1.10"), nil); !slices.Equal(got, addrList("192.168.1.10")) {
		t.Errorf("primary with a loopback InternalIP = %v", got)
	}
}
