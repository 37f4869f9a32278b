package conntrack

import (
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Every rule of a sweep, on entries written into a real ct4_v3 next to
// real lb4_backends and lb4_revnat entries.
func TestSweepRules(t *testing.T) {
	w := newWorld(t, 4096)
	const (
		backendID = 7
		revNatID  = 3
		goneRN    = 4 // a reverse-NAT id whose frontend was removed
		live      = 100
		expired   = -100
	)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	be := netip.MustParseAddrPort("10.244.1.2:8080")
	other := netip.MustParseAddrPort("10.244.1.3:8080")
	must(t, w.dp.LB4.Backends.Put(backendID, bpf.SluiceLb4Backend{Address: maps.Addr4(be.Addr()), Port: maps.Port(be.Port()),
		Proto: 6, Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}))
	must(t, w.dp.LB4.RevNat.Put(revNatID, bpf.SluiceLb4ReverseNat{Address: maps.Addr4(vip.Addr()), Port: maps.Port(vip.Port())}))

	type side struct {
		present bool
		expires int // relative to now
	}
	cases := []struct {
		name string
		fwd  side
		rev  side
		// fwdTo is the forward entry's backend (default be); revNat the
		// reply entry's (default revNatID).
		fwdTo    netip.AddrPort
		revNat   uint32
		wantFwd  bool
		wantRev  bool
		repaired bool
	}{
		{name: "both live", fwd: side{true, live}, rev: side{true, live}, wantFwd: true, wantRev: true},
		{name: "both expired", fwd: side{true, expired}, rev: side{true, expired}},
		{name: "forward expired, reply live", fwd: side{true, expired}, rev: side{true, live}, wantFwd: true, wantRev: true},
		{name: "forward live, reply expired", fwd: side{true, live}, rev: side{true, expired}, wantFwd: true, wantRev: true},
		{name: "forward expired, no reply", fwd: side{true, expired}},
		{name: "live forward, no reply: repaired", fwd: side{true, live}, wantFwd: true, wantRev: true, repaired: true},
		{name: "live forward to a gone backend, no reply: not repaired", fwd: side{true, live}, fwdTo: other, wantFwd: true},
		{name: "expired reply, no forward", rev: side{true, expired}},
		{name: "live reply, no forward: orphan", rev: side{true, live}},
		{name: "reply whose client tuple is another backend's flow", fwd: side{true, live}, rev: side{true, live}, fwdTo: other, wantFwd: true},
		{name: "reply of a removed frontend", fwd: side{true, live}, rev: side{true, live}, revNat: goneRN, wantFwd: true},
	}
	now := int(monoSeconds(t))
	type keys struct{ fk, rk bpf.SluiceCt4Key }
	ks := make([]keys, len(cases))
	for i, c := range cases {
		client := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(4000+i))
		to := c.fwdTo
		if !to.IsValid() {
			to = be
		}
		rn := c.revNat
		if rn == 0 {
			rn = revNatID
		}
		ks[i].fk = ctKey(client.String(), vip.String(), 6)
		// The reply entry is the flow's to be: from be, whatever the
		// forward entry says now.
		ks[i].rk = ctKey(be.String(), client.String(), 6)
		if c.fwd.present {
			must(t, w.dp.CT4.Put(ks[i].fk, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendAddr: maps.Addr4(to.Addr()),
				BackendPort: maps.Port(to.Port()), BackendId: backendID, RevNatId: revNatID, Expires: uint32(now + c.fwd.expires)}))
		}
		if c.rev.present {
			must(t, w.dp.CT4.Put(ks[i].rk, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_REPLY, BackendId: backendID,
				RevNatId: rn, Expires: uint32(now + c.rev.expires)}))
		}
	}
	st := w.sweep()
	got := w.entries()
	for i, c := range cases {
		fe, hasF := got[ks[i].fk]
		re, hasR := got[ks[i].rk]
		if hasF != c.wantFwd || hasR != c.wantRev {
			t.Errorf("%s: forward %v reply %v after the sweep, want %v %v", c.name, hasF, hasR, c.wantFwd, c.wantRev)
		}
		if c.repaired && hasR {
			want := fe
			want.Kind, want.BackendAddr, want.BackendPort, want.Flags = bpf.SluiceCtKindCT_REPLY, 0, 0, 0
			if re != want {
				t.Errorf("%s: repaired reply entry %+v, want %+v", c.name, re, want)
			}
		}
	}
	want := Stats{Forward: 7, Reply: 3, Expired: 3, Orphans: 4, Repaired: 1}
	if st.Forward != want.Forward || st.Reply != want.Reply || st.Expired != want.Expired || st.Orphans != want.Orphans ||
		st.Repaired != want.Repaired || st.Purged != 0 {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
