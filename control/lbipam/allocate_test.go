package lbipam

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParsePool(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"192.168.50.200/29", "192.168.50.200/29", false},
		{" 10.0.0.1/24 , 10.1.0.0/31", "10.0.0.0/24,10.1.0.0/31", false},
		{"10.0.0.0/24,10.0.0.128/25", "", true},
		{"fd00::/64", "", true},
		{"10.0.0.300/24", "", true},
	} {
		p, err := ParsePool(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParsePool(%q): err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && p.String() != tc.want {
			t.Errorf("ParsePool(%q) = %s, want %s", tc.in, p, tc.want)
		}
	}
}

func TestUsable(t *testing.T) {
	p, _ := ParsePool("10.0.0.0/30,10.0.1.0/31,10.0.2.7/32")
	for a, want := range map[string]bool{
		"10.0.0.0": false, "10.0.0.1": true, "10.0.0.2": true, "10.0.0.3": false,
		"10.0.1.0": true, "10.0.1.1": true, "10.0.2.7": true, "10.0.2.8": false,
	} {
		if got := p.Usable(netip.MustParseAddr(a)); got != want {
			t.Errorf("Usable(%s) = %v, want %v", a, got, want)
		}
	}
	if p.size() != 5 {
		t.Errorf("size %d, want 5", p.size())
	}
}

func TestAllocate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ips := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	type want map[string]string
	for _, tc := range []struct {
		name     string
		pool     string
		svcs     []Service
		want     want
		problems []Problem
	}{{
		name: "lowest free addresses, oldest first, network address skipped",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/b", Created: at(2)}, {Key: "ns/a", Created: at(1)}},
		want: want{"ns/a": "10.0.0.1", "ns/b": "10.0.0.2"},
	}, {
		name: "same creation time: by namespace/name",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/b", Created: at(1)}, {Key: "ns/a", Created: at(1)}},
		want: want{"ns/a": "10.0.0.1", "ns/b": "10.0.0.2"},
	}, {
		name: "assigned addresses are kept (a restart renumbers nothing)",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/a", Created: at(1), Current: ips("10.0.0.5")}, {Key: "ns/b", Created: at(2), Current: ips("10.0.0.1")},
			{Key: "ns/c", Created: at(3)}},
		want: want{"ns/a": "10.0.0.5", "ns/b": "10.0.0.1", "ns/c": "10.0.0.2"},
	}, {
		name: "an address outside the pool in status is not kept",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/a", Created: at(1), Current: ips("10.9.9.9")}},
		want: want{"ns/a": "10.0.0.1"},
	}, {
		name: "broadcast address in status is not kept",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/a", Created: at(1), Current: ips("10.0.0.7")}},
		want: want{"ns/a": "10.0.0.1"},
	}, {
		name:     "two claim one address: the older keeps it, the younger is re-assigned",
		pool:     "10.0.0.0/29",
		svcs:     []Service{{Key: "ns/young", Created: at(5), Current: ips("10.0.0.3")}, {Key: "ns/old", Created: at(1), Current: ips("10.0.0.3")}},
		want:     want{"ns/old": "10.0.0.3", "ns/young": "10.0.0.1"},
		problems: []Problem{{"ns/young", ReasonConflict, "address 10.0.0.3 is held by the older Service ns/old: given another"}},
	}, {
		name: "spec.loadBalancerIP honoured",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/a", Created: at(1), Requested: "10.0.0.4"}, {Key: "ns/b", Created: at(2)}},
		want: want{"ns/a": "10.0.0.4", "ns/b": "10.0.0.1"},
	}, {
		name:     "spec.loadBalancerIP moves a younger Service off its address",
		pool:     "10.0.0.0/29",
		svcs:     []Service{{Key: "ns/a", Created: at(1), Requested: "10.0.0.4"}, {Key: "ns/b", Created: at(2), Current: ips("10.0.0.4")}},
		want:     want{"ns/a": "10.0.0.4", "ns/b": "10.0.0.1"},
		problems: []Problem{{"ns/b", ReasonConflict, "address 10.0.0.4 is held by the older Service ns/a: given another"}},
	}, {
		name:     "spec.loadBalancerIP held by an older Service",
		pool:     "10.0.0.0/29",
		svcs:     []Service{{Key: "ns/a", Created: at(1), Current: ips("10.0.0.4")}, {Key: "ns/b", Created: at(2), Requested: "10.0.0.4"}},
		want:     want{"ns/a": "10.0.0.4"},
		problems: []Problem{{"ns/b", ReasonRequested, "spec.loadBalancerIP 10.0.0.4 is held by the older Service ns/a"}},
	}, {
		name: "spec.loadBalancerIP outside the pool, broadcast, or not an address",
		pool: "10.0.0.0/29",
		svcs: []Service{{Key: "ns/a", Created: at(1), Requested: "10.1.0.4"}, {Key: "ns/b", Created: at(2), Requested: "10.0.0.7"},
			{Key: "ns/c", Created: at(3), Requested: "nope"}},
		want: want{},
		problems: []Problem{
			{"ns/a", ReasonRequested, "spec.loadBalancerIP 10.1.0.4 is not in pool 10.0.0.0/29"},
			{"ns/b", ReasonRequested, "spec.loadBalancerIP 10.0.0.7 is the network or broadcast address of its CIDR in pool 10.0.0.0/29"},
			{"ns/c", ReasonRequested, `spec.loadBalancerIP "nope" is not an IPv4 address`},
		},
	}, {
		name:     "exhausted: the youngest waits, named with the pool",
		pool:     "10.0.0.0/30",
		svcs:     []Service{{Key: "ns/a", Created: at(1)}, {Key: "ns/b", Created: at(2)}, {Key: "ns/c", Created: at(3)}},
		want:     want{"ns/a": "10.0.0.1", "ns/b": "10.0.0.2"},
		problems: []Problem{{"ns/c", ReasonExhausted, "no free address in pool 10.0.0.0/30 (2 addresses, all assigned)"}},
	}, {
		name: "a /32 and a /31 give out every address, across CIDRs in order",
		pool: "10.0.0.9/32,10.0.1.0/31",
		svcs: []Service{{Key: "ns/a", Created: at(1)}, {Key: "ns/b", Created: at(2)}, {Key: "ns/c", Created: at(3)}},
		want: want{"ns/a": "10.0.0.9", "ns/b": "10.0.1.0", "ns/c": "10.0.1.1"},
	}, {
		name: "a released address is reused",
		pool: "10.0.0.0/30",
		svcs: []Service{{Key: "ns/b", Created: at(2), Current: ips("10.0.0.2")}, {Key: "ns/c", Created: at(3)}},
		want: want{"ns/b": "10.0.0.2", "ns/c": "10.0.0.1"},
	}, {
		name:     "empty pool: every Service waits",
		pool:     "",
		svcs:     []Service{{Key: "ns/a", Created: at(1)}},
		want:     want{},
		problems: []Problem{{"ns/a", ReasonExhausted, "no free address in pool  (0 addresses, all assigned)"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := ParsePool(tc.pool)
			if err != nil {
				t.Fatal(err)
			}
			got, problems := Allocate(pool, tc.svcs)
			gotS := want{}
			for k, a := range got {
				gotS[k] = a.String()
			}
			if !reflect.DeepEqual(gotS, tc.want) {
				t.Errorf("assignments %v, want %v", gotS, tc.want)
			}
			if !reflect.DeepEqual(problems, tc.problems) {
				t.Errorf("problems %q, want %q", problems, tc.problems)
			}
		})
	}
}
