package maps

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// A walk sees every entry, in chunks no larger than asked, while the
// callback deletes entries of its chunk and partners further on; with and
// without batch lookups.
func TestWalkCT4DeletingAsItGoes(t *testing.T) {
	testenv.Privileged(t)
	for _, batch := range []bool{true, false} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: uint32(unsafe.Sizeof(bpf.SluiceCt4Entry{})), MaxEntries: 20000})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ct := New[bpf.SluiceCt4Key, bpf.SluiceCt4Entry](m)
		ct.noBatch.Store(!batch)
		const flows = 5000
		var keys []bpf.SluiceCt4Key
		var vals []bpf.SluiceCt4Entry
		client := Addr4(netip.MustParseAddr("10.0.0.1"))
		for i := range flows {
			fk := bpf.SluiceCt4Key{Saddr: client, Daddr: 1, Sport: Port(uint16(i)), Dport: Port(80), Proto: 6}
			fe := bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendAddr: 2, BackendPort: Port(8080), Expires: uint32(i % 2)}
			re := fe
			re.Kind, re.BackendAddr, re.BackendPort = bpf.SluiceCtKindCT_REPLY, 0, 0
			keys = append(keys, fk, CT4ReplyKey(fk, fe))
			vals = append(vals, fe, re)
		}
		if err := ct.PutAll(keys, vals); err != nil {
			t.Fatal(err)
		}
		seen := map[bpf.SluiceCt4Key]int{}
		err = WalkCT4(ct, 512, func(ks []bpf.SluiceCt4Key, vs []bpf.SluiceCt4Entry) error {
			if len(ks) > 512 {
				t.Fatalf("batch=%v: chunk of %d", batch, len(ks))
			}
			for i, k := range ks {
				seen[k]++
				// Odd flows go, both entries, as a collector would.
				if vs[i].Expires == 1 && vs[i].Kind == bpf.SluiceCtKindCT_FORWARD {
					if err := DeleteCT4Pair(ct, k, CT4ReplyKey(k, vs[i])); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("batch=%v: %v", batch, err)
		}
		for i, k := range keys {
			if vals[i].Expires == 0 && seen[k] == 0 {
				t.Fatalf("batch=%v: kept entry %+v never seen", batch, k)
			}
			if batch && seen[k] > 1 {
				t.Fatalf("batch=%v: %+v seen %d times", batch, k, seen[k])
			}
		}
		n := 0
		if err := ct.Each(func(bpf.SluiceCt4Key, bpf.SluiceCt4Entry) bool { n++; return true }); err != nil {
			t.Fatal(err)
		}
		if n != flows {
			t.Errorf("batch=%v: %d entries left, want %d", batch, n, flows)
		}
	}
}

// The partner keys are the datapath's (ct4_reply_key, lb4_forward_of_reply).
func TestCT4PartnerKeys(t *testing.T) {
	client := netip.MustParseAddrPort("10.0.0.1:40000")
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	be := netip.MustParseAddrPort("10.244.1.2:8080")
	key := func(s, d netip.AddrPort) bpf.SluiceCt4Key {
		return bpf.SluiceCt4Key{Saddr: Addr4(s.Addr()), Daddr: Addr4(d.Addr()), Sport: Port(s.Port()), Dport: Port(d.Port()), Proto: 17}
	}
	fk, rk := key(client, vip), key(be, client)
	fe := bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendAddr: Addr4(be.Addr()), BackendPort: Port(be.Port())}
	if got := CT4ReplyKey(fk, fe); got != rk {
		t.Errorf("reply key %+v, want %+v", got, rk)
	}
	front := bpf.SluiceLb4ReverseNat{Address: Addr4(vip.Addr()), Port: Port(vip.Port())}
	re := bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_REPLY}
	if got := CT4ForwardKey(rk, re, front); got != fk {
		t.Errorf("forward key %+v, want %+v", got, fk)
	}
	// A SNATed flow: replies come to the node's address and port; the
	// client is in the reply entry.
	node := netip.MustParseAddrPort("192.168.50.11:61234")
	sfe := fe
	sfe.Flags, sfe.NatAddr, sfe.NatPort = bpf.SluiceCtFlagsCT_F_SNAT, Addr4(node.Addr()), Port(node.Port())
	srk := key(be, node)
	if got := CT4ReplyKey(fk, sfe); got != srk {
		t.Errorf("SNAT reply key %+v, want %+v", got, srk)
	}
	sre := bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_REPLY, Flags: bpf.SluiceCtFlagsCT_F_SNAT, NatAddr: Addr4(client.Addr()), NatPort: Port(client.Port())}
	if got := CT4ForwardKey(srk, sre, front); got != fk {
		t.Errorf("SNAT forward key %+v, want %+v", got, fk)
	}
	if !CT4Partners(fe, rk) {
		t.Error("a forward entry to the reply's backend is not its partner")
	}
	fe.BackendPort = Port(8081)
	if CT4Partners(fe, rk) {
		t.Error("a forward entry to another backend is the reply's partner")
	}
}
