package bpf_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/maps"
)

// The north-south world: a node at nodeAddr on an underlay (u0) where the
// other node (peerAddr, its pods behind it) and an external client live,
// and this node's pods on u1. SNATed packets are forwarded with the node's
// routing table, so the programs run inside a network namespace holding
// these routes (fibNet), as they would on the node.
var (
	nodeAddr    = netip.MustParseAddr("192.168.50.11")
	peerAddr    = netip.MustParseAddr("192.168.50.12")
	peerMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x12}
	extClient   = netip.MustParseAddrPort("192.168.50.100:40000")
	extClient2  = netip.MustParseAddrPort("192.168.50.101:40000")
	nodePort    = netip.AddrPortFrom(nodeAddr, 30080)
	lbIP        = "192.168.60.1:80"
	localPod    = "10.244.1.2:8080" // on this node (u1)
	remotePod   = "10.244.2.2:8080" // behind peerAddr
	localPodCli = netip.MustParseAddrPort("10.244.1.2:40000")
)

var fibSeq atomic.Int32

// fibNet is a network namespace with the node's routes, for the programs'
// fib lookups.
type fibNet struct {
	ns *netlab.NS
}

func newFibNet(t testing.TB) *fibNet {
	t.Helper()
	ns, err := netlab.NewNS(fmt.Sprintf("slb%d-%d", os.Getpid()%100000, fibSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ns.LoopbackUp())
	must(ns.Sysctl("ipv4/ip_forward", "1"))
	must(netlab.Veth(ns, "u0", ns, "u0p"))
	must(netlab.Veth(ns, "u1", ns, "u1p"))
	must(ns.AddrAdd("u0", netip.PrefixFrom(nodeAddr, 24)))
	nl := ns.Netlink()
	u0, err := nl.LinkByName("u0")
	must(err)
	u1, err := nl.LinkByName("u1")
	must(err)
	must(nl.NeighAdd(&netlink.Neigh{LinkIndex: u0.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: peerAddr.AsSlice(), HardwareAddr: peerMAC, Family: netlink.FAMILY_V4}))
	must(nl.RouteAdd(&netlink.Route{LinkIndex: u0.Attrs().Index, Gw: peerAddr.AsSlice(),
		Dst: &net.IPNet{IP: net.IP{10, 244, 2, 0}, Mask: net.CIDRMask(24, 32)}}))
	must(nl.RouteAdd(&netlink.Route{LinkIndex: u1.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: net.IP{10, 244, 1, 0}, Mask: net.CIDRMask(24, 32)}}))
	return &fibNet{ns: ns}
}

// run feeds one frame through prog inside the namespace.
func (n *fibNet) run(t *testing.T, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+256)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	var ret uint32
	if err := n.ns.Do(func() (err error) { ret, err = prog.Run(opts); return err }); err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// nsWorld is a world whose programs run in a fibNet, with the node's
// address, pod CIDR and SNAT range in its config.
type nsWorld struct {
	*world
	net *fibNet
}

func newNSWorld(t *testing.T) *nsWorld {
	w := &nsWorld{world: newWorld(t), net: newFibNet(t)}
	w.setNode(nodeAddr, netip.MustParsePrefix("10.244.1.0/24"), 0, 0)
	return w
}

func (w *nsWorld) setNode(addr netip.Addr, pods netip.Prefix, lo, hi uint16) {
	w.t.Helper()
	cfg := bpf.SluiceDatapathConfig{SnatPortMin: lo, SnatPortMax: hi}
	if addr.IsValid() {
		cfg.NodeAddr4 = maps.Addr4(addr)
	}
	if pods.IsValid() {
		cfg.PodCidr4 = maps.Addr4(pods.Masked().Addr())
		cfg.PodCidr4Mask = maps.Addr4(prefixMask(pods.Bits()))
	}
	if err := w.dp.Config.Put(0, cfg); err != nil {
		w.t.Fatal(err)
	}
}

func prefixMask(bits int) netip.Addr {
	var b [4]byte
	for i := range bits {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

func (w *nsWorld) in(t *testing.T, pkt []byte) (uint32, *packet.Frame) {
	t.Helper()
	ret, out := w.net.run(t, w.objs.SluiceIngress, pkt)
	return ret, parse(t, out)
}

// external programs an external frontend (kind and flags as the control
// plane would set them) with backends; local names the backends on this
// node.
func (w *nsWorld) external(fe control.Frontend, kind bpf.SluiceLbFrontendKind, flags bpf.SluiceLbServiceFlags, bes []control.Backend, local ...string) {
	w.t.Helper()
	w.serve(fe, bes)
	w.editMaster(fe, func(m *bpf.SluiceLb4Service) {
		m.Kind = kind
		m.Flags |= flags
	})
	for _, l := range local {
		w.setLocal(netip.MustParseAddrPort(l), fe.Proto)
	}
}

// setLocal flags a programmed backend as on this node.
func (w *nsWorld) setLocal(be netip.AddrPort, proto control.Protocol) {
	w.t.Helper()
	var id uint32
	var v bpf.SluiceLb4Backend
	it := w.dp.LB4.Backends.Raw().Iterate()
	for it.Next(&id, &v) {
		if v.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE != 0 && v.Address == maps.Addr4(be.Addr()) &&
			v.Port == maps.Port(be.Port()) && v.Proto == uint8(proto) {
			v.Flags |= bpf.SluiceLbBackendFlagsBE_F_LOCAL
			if err := w.dp.LB4.Backends.Put(id, v); err != nil {
				w.t.Fatal(err)
			}
			return
		}
	}
	w.t.Fatalf("backend %s not programmed", be)
}

// internalScope writes a frontend's scope 1 entries: master and slots for
// backends already programmed (by another frontend).
func (w *nsWorld) internalScope(fe control.Frontend, flags bpf.SluiceLbServiceFlags, ids []uint32) {
	w.t.Helper()
	m, err := w.dp.LB4.Services.Lookup(lbKeyOf(fe, 0))
	if err != nil {
		w.t.Fatal(err)
	}
	k := lbKeyOf(fe, 0)
	k.Scope = uint8(bpf.SluiceLbScopeLB_SCOPE_INTERNAL)
	for i, id := range ids {
		k.BackendSlot = uint16(i + 1)
		if err := w.dp.LB4.Services.Put(k, bpf.SluiceLb4Service{BackendId: id}); err != nil {
			w.t.Fatal(err)
		}
	}
	k.BackendSlot = 0
	m.Count, m.Flags = uint16(len(ids)), flags
	if err := w.dp.LB4.Services.Put(k, m); err != nil {
		w.t.Fatal(err)
	}
}

func addrPort(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

func inSNATRange(p uint16) bool {
	return p >= uint16(bpf.SluiceSnatDefaultSNAT_DEFAULT_PORT_MIN) && p <= uint16(bpf.SluiceSnatDefaultSNAT_DEFAULT_PORT_MAX)
}

// A NodePort flow from an external client to a backend on another node,
// through all its packets: the SYN leaves SNATed to the node's address
// and a port of the range, forwarded to the peer node's MAC; the backend's
// SYN-ACK to that port is translated back to NodeIP:NodePort -> client and
// forwarded; the client's ACK follows the flow; and the flow's entries
// carry what each direction needs.
func TestSNATNodePortRemoteBackend(t *testing.T) {
	for _, proto := range []control.Protocol{control.TCP, control.UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			w := newNSWorld(t)
			fe := control.Frontend{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: proto}
			w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
			seg := func(src, dst netip.AddrPort, flags uint8) []byte {
				return packet.Build(packet.Spec{Src: src, Dst: dst, Proto: uint8(proto), TCPFlags: flags, Payload: []byte("x")})
			}

			before := w.counts()
			ret, f := w.in(t, seg(extClient, nodePort, packet.TCPSyn))
			if ret != tcActRedirect {
				t.Fatalf("SYN: verdict %d, want redirect (%d); counters %v", ret, tcActRedirect, delta(before, w.counts()))
			}
			if f.Dst != netip.MustParseAddrPort(remotePod).Addr() || f.DstPort != 8080 || f.Src != nodeAddr || !inSNATRange(f.SrcPort) {
				t.Fatalf("SYN left as %s:%d -> %s:%d, want %s:<61000-65535> -> %s", f.Src, f.SrcPort, f.Dst, f.DstPort, nodeAddr, remotePod)
			}
			if f.DstMAC != [6]byte(peerMAC) {
				t.Errorf("SYN to MAC %x, want the peer's %s", f.DstMAC, peerMAC)
			}
			if ttl := f.IP[8]; ttl != 63 {
				t.Errorf("TTL %d, want 63 (forwarded once)", ttl)
			}
			checksumsOK(t, f)
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"new-flow": 1, "snat": 1}) {
				t.Errorf("SYN counters %v", d)
			}
			natPort := f.SrcPort
			fwd, err := w.dp.CT4.Lookup(ctKey(extClient, nodePort, uint8(proto)))
			if err != nil {
				t.Fatalf("forward entry: %v", err)
			}
			if fwd.Flags&bpf.SluiceCtFlagsCT_F_SNAT == 0 || fwd.NatAddr != maps.Addr4(nodeAddr) || fwd.NatPort != maps.Port(natPort) {
				t.Errorf("forward entry %+v: want SNAT to %s:%d", fwd, nodeAddr, natPort)
			}
			rk := ctKey(netip.MustParseAddrPort(remotePod), addrPort(nodeAddr, natPort), uint8(proto))
			rev, err := w.dp.CT4.Lookup(rk)
			if err != nil {
				t.Fatalf("reply entry backend -> node:%d: %v", natPort, err)
			}
			if rev.Kind != bpf.SluiceCtKindCT_REPLY || rev.NatAddr != maps.Addr4(extClient.Addr()) || rev.NatPort != maps.Port(extClient.Port()) {
				t.Errorf("reply entry %+v: want the client %s", rev, extClient)
			}

			before = w.counts()
			ret, f = w.in(t, seg(netip.MustParseAddrPort(remotePod), addrPort(nodeAddr, natPort), packet.TCPSyn|packet.TCPAck))
			if ret != tcActRedirect {
				t.Fatalf("reply: verdict %d, want redirect; counters %v", ret, delta(before, w.counts()))
			}
			if got := addrPort(f.Src, f.SrcPort); got != nodePort || addrPort(f.Dst, f.DstPort) != extClient {
				t.Errorf("reply left as %s -> %s:%d, want %s -> %s", got, f.Dst, f.DstPort, nodePort, extClient)
			}
			checksumsOK(t, f)
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"reply-snat": 1}) {
				t.Errorf("reply counters %v", d)
			}
			if fwd, _ := w.dp.CT4.Lookup(ctKey(extClient, nodePort, uint8(proto))); fwd.Flags&bpf.SluiceCtFlagsCT_F_SEEN_REPLY == 0 {
				t.Error("forward entry not told of the reply")
			}

			before = w.counts()
			ret, f = w.in(t, seg(extClient, nodePort, packet.TCPAck))
			if ret != tcActRedirect || addrPort(f.Src, f.SrcPort) != addrPort(nodeAddr, natPort) {
				t.Errorf("next packet: verdict %d from %s:%d, want redirect from %s:%d", ret, f.Src, f.SrcPort, nodeAddr, natPort)
			}
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"established": 1}) {
				t.Errorf("next packet counters %v", d)
			}
		})
	}
}

// Which new flows are SNATed, and which keep their client's address.
func TestSNATDecision(t *testing.T) {
	npTCP := control.Frontend{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.TCP}
	vipTCP := frontend(vip, control.TCP)
	cases := []struct {
		name     string
		fe       control.Frontend
		kind     bpf.SluiceLbFrontendKind
		flags    bpf.SluiceLbServiceFlags
		backend  string
		local    bool
		client   netip.AddrPort
		wantSNAT bool
	}{
		{"NodePort, eTP Cluster, remote backend", npTCP, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, remotePod, false, extClient, true},
		{"NodePort, eTP Cluster, local backend: client kept", npTCP, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, localPod, true, extClient, false},
		{"NodePort, eTP Local: client kept", npTCP, bpf.SluiceLbFrontendKindFE_NODE_PORT, 0, localPod, true, extClient, false},
		{"ClusterIP from a pod to a remote backend: client kept", vipTCP, bpf.SluiceLbFrontendKindFE_CLUSTER_IP, 0, remotePod, false, client, false},
		{"hairpin: the backend is the client", vipTCP, bpf.SluiceLbFrontendKindFE_CLUSTER_IP, 0, localPod, true, localPodCli, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newNSWorld(t)
			var local []string
			if c.local {
				local = []string{c.backend}
			}
			w.external(c.fe, c.kind, c.flags, backends(c.backend), local...)
			feAP := addrPort(c.fe.Addr, c.fe.Port)
			before := w.counts()
			ret, f := w.in(t, packet.Build(packet.Spec{Src: c.client, Dst: feAP, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn}))
			if got := addrPort(f.Dst, f.DstPort); got != netip.MustParseAddrPort(c.backend) {
				t.Fatalf("to %s, want %s; counters %v", got, c.backend, delta(before, w.counts()))
			}
			checksumsOK(t, f)
			if c.wantSNAT {
				if ret != tcActRedirect || f.Src != nodeAddr || !inSNATRange(f.SrcPort) {
					t.Errorf("verdict %d, source %s:%d: want SNAT to %s and forwarded", ret, f.Src, f.SrcPort, nodeAddr)
				}
				if d := delta(before, w.counts()); d["snat"] != 1 {
					t.Errorf("counters %v: no snat", d)
				}
				return
			}
			if ret != tcActPass || addrPort(f.Src, f.SrcPort) != c.client {
				t.Errorf("verdict %d, source %s:%d: want the client's own, passed to the stack", ret, f.Src, f.SrcPort)
			}
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"new-flow": 1}) {
				t.Errorf("counters %v", d)
			}
		})
	}
}

// A hairpin flow's reply, from the pod to the node's address, goes back to
// the pod from the frontend.
func TestSNATHairpinReply(t *testing.T) {
	w := newNSWorld(t)
	fe := frontend(vip, control.TCP)
	w.external(fe, bpf.SluiceLbFrontendKindFE_CLUSTER_IP, 0, backends(localPod), localPod)
	_, f := w.in(t, packet.Build(packet.Spec{Src: localPodCli, Dst: netip.MustParseAddrPort(vip), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn}))
	ret, r := w.in(t, packet.Build(packet.Spec{Src: netip.MustParseAddrPort(localPod), Dst: addrPort(f.Src, f.SrcPort), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn | packet.TCPAck}))
	if ret != tcActRedirect || addrPort(r.Src, r.SrcPort) != netip.MustParseAddrPort(vip) || addrPort(r.Dst, r.DstPort) != localPodCli {
		t.Errorf("reply: verdict %d, %s:%d -> %s:%d; want redirect %s -> %s", ret, r.Src, r.SrcPort, r.Dst, r.DstPort, vip, localPodCli)
	}
	checksumsOK(t, r)
}

// externalTrafficPolicy Local (rule 13): external clients get the Local
// set (scope 0); this node's pods the Cluster set (scope 1), SNATed when
// the backend is remote; and an empty Local set drops.
func TestExternalTrafficPolicyLocalScopes(t *testing.T) {
	w := newNSWorld(t)
	fe := control.Frontend{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.TCP}
	// The remote backend gets an id through another frontend.
	w.serve(frontend(vip, control.TCP), backends(remotePod))
	remoteID := w.slotBackends(frontend(vip, control.TCP))[netip.MustParseAddrPort(remotePod)]
	w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_TWO_SCOPES, backends(localPod), localPod)
	w.internalScope(fe, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, []uint32{remoteID})

	syn := func(src netip.AddrPort) []byte {
		return packet.Build(packet.Spec{Src: src, Dst: nodePort, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
	}
	ret, f := w.in(t, syn(extClient))
	if ret != tcActPass || addrPort(f.Dst, f.DstPort) != netip.MustParseAddrPort(localPod) || addrPort(f.Src, f.SrcPort) != extClient {
		t.Errorf("external client: verdict %d, %s:%d -> %s:%d; want %s -> %s passed", ret, f.Src, f.SrcPort, f.Dst, f.DstPort, extClient, localPod)
	}
	pod := netip.MustParseAddrPort("10.244.1.7:40000")
	ret, f = w.in(t, syn(pod))
	if ret != tcActRedirect || addrPort(f.Dst, f.DstPort) != netip.MustParseAddrPort(remotePod) || f.Src != nodeAddr {
		t.Errorf("local pod: verdict %d, %s:%d -> %s:%d; want SNAT to %s -> %s", ret, f.Src, f.SrcPort, f.Dst, f.DstPort, nodeAddr, remotePod)
	}

	// No local endpoint, some elsewhere: external clients are dropped.
	w.editMaster(fe, func(m *bpf.SluiceLb4Service) {
		m.Count = 0
		m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY
	})
	before := w.counts()
	if ret, _ := w.in(t, syn(extClient2)); ret != tcActShot {
		t.Errorf("empty Local set: verdict %d, want drop", ret)
	}
	if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"drop-no-local-endpoints": 1}) {
		t.Errorf("empty Local set counters %v", d)
	}
}

// loadBalancerSourceRanges (rule 21): a new flow from inside a range is
// served, one from outside dropped before translation.
func TestSourceRanges(t *testing.T) {
	w := newNSWorld(t)
	fe := frontend(lbIP, control.TCP)
	w.external(fe, bpf.SluiceLbFrontendKindFE_LOAD_BALANCER, bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES|bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(localPod), localPod)
	m, err := w.dp.LB4.Services.Lookup(lbKeyOf(fe, 0))
	if err != nil {
		t.Fatal(err)
	}
	allow := bpf.SluiceLb4SrcRangeKey{Prefixlen: 32 + 32, RevNatId: m.RevNatId, Addr: maps.Addr4(extClient.Addr())}
	if err := w.dp.LB4.SourceRanges.Put(allow, 1); err != nil {
		t.Fatal(err)
	}
	// Another frontend's range admits nobody here.
	other := bpf.SluiceLb4SrcRangeKey{Prefixlen: 32 + 24, RevNatId: m.RevNatId + 1, Addr: maps.Addr4(netip.MustParseAddr("192.168.50.0"))}
	if err := w.dp.LB4.SourceRanges.Put(other, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src  netip.AddrPort
		want uint32
		cnt  string
	}{
		{extClient, tcActPass, "new-flow"},
		{extClient2, tcActShot, "drop-source-range"},
	} {
		before := w.counts()
		ret, _ := w.in(t, packet.Build(packet.Spec{Src: c.src, Dst: netip.MustParseAddrPort(lbIP), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn}))
		if d := delta(before, w.counts()); ret != c.want || !sameCounts(d, map[string]uint64{c.cnt: 1}) {
			t.Errorf("from %s: verdict %d, counters %v; want %d, %s", c.src, ret, d, c.want, c.cnt)
		}
	}
}

// SNAT ports: never one a live flow holds, nor one a socket of the node's
// would receive; when none is free, new flows are dropped and counted.
func TestSNATPortAllocation(t *testing.T) {
	syn := func(src netip.AddrPort) []byte {
		return packet.Build(packet.Spec{Src: src, Dst: nodePort, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
	}
	fe := control.Frontend{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.TCP}

	t.Run("range of two", func(t *testing.T) {
		w := newNSWorld(t)
		w.setNode(nodeAddr, netip.Prefix{}, 61000, 61001)
		w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
		seen := map[uint16]bool{}
		for i := range 2 {
			ret, f := w.in(t, syn(addrPort(extClient.Addr(), uint16(40000+i))))
			if ret != tcActRedirect || f.SrcPort < 61000 || f.SrcPort > 61001 || seen[f.SrcPort] {
				t.Fatalf("flow %d: verdict %d, port %d (taken: %v)", i, ret, f.SrcPort, seen)
			}
			seen[f.SrcPort] = true
		}
		before := w.counts()
		if ret, _ := w.in(t, syn(addrPort(extClient.Addr(), 40002))); ret != tcActShot {
			t.Errorf("third flow: verdict %d, want drop", ret)
		}
		if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"drop-snat-exhausted": 1}) {
			t.Errorf("third flow counters %v", d)
		}
		// The first two still get their own replies.
		for p := range seen {
			ret, f := w.in(t, packet.Build(packet.Spec{Src: netip.MustParseAddrPort(remotePod), Dst: addrPort(nodeAddr, p), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn | packet.TCPAck}))
			if ret != tcActRedirect || f.Dst != extClient.Addr() || (f.DstPort != 40000 && f.DstPort != 40001) {
				t.Errorf("reply to port %d: verdict %d to %s:%d", p, ret, f.Dst, f.DstPort)
			}
		}
	})

	for _, proto := range []string{"tcp", "udp"} {
		t.Run("socket of the node on the only port, "+proto, func(t *testing.T) {
			w := newNSWorld(t)
			w.setNode(nodeAddr, netip.Prefix{}, 61000, 61000)
			w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
			var closer interface{ Close() error }
			err := w.net.ns.Do(func() (err error) {
				if proto == "tcp" {
					closer, err = net.Listen("tcp4", addrPort(nodeAddr, 61000).String())
				} else {
					closer, err = net.ListenPacket("udp4", addrPort(nodeAddr, 61000).String())
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			pkt := syn(extClient)
			if proto == "udp" {
				w.external(control.Frontend{Addr: fe.Addr, Port: fe.Port, Proto: control.UDP}, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
				pkt = packet.Build(packet.Spec{Src: extClient, Dst: nodePort, Proto: packet.ProtoUDP, Payload: []byte("x")})
			}
			before := w.counts()
			if ret, _ := w.in(t, pkt); ret != tcActShot {
				t.Errorf("verdict %d, want drop: the node's socket holds the port", ret)
			}
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"drop-snat-exhausted": 1}) {
				t.Errorf("counters %v", d)
			}
			closer.Close()
			if ret, f := w.in(t, pkt); ret != tcActRedirect || f.SrcPort != 61000 {
				t.Errorf("after the socket closed: verdict %d, port %d; want redirect from 61000", ret, f.SrcPort)
			}
		})
	}
}

// SNAT that cannot happen is dropped, with its own reason.
func TestSNATUnavailable(t *testing.T) {
	fe := control.Frontend{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.TCP}
	syn := packet.Build(packet.Spec{Src: extClient, Dst: nodePort, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})

	t.Run("no node address", func(t *testing.T) {
		w := newNSWorld(t)
		w.setNode(netip.Addr{}, netip.Prefix{}, 0, 0)
		w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
		before := w.counts()
		if ret, _ := w.in(t, syn); ret != tcActShot {
			t.Errorf("verdict %d, want drop", ret)
		}
		if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"drop-snat-no-address": 1}) {
			t.Errorf("counters %v", d)
		}
	})
	t.Run("no route to the backend", func(t *testing.T) {
		w := newNSWorld(t)
		w.external(fe, bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends("10.9.9.9:8080"))
		before := w.counts()
		if ret, _ := w.in(t, syn); ret != tcActShot {
			t.Errorf("verdict %d, want drop", ret)
		}
		if d := delta(before, w.counts()); d["drop-fib"] != 1 {
			t.Errorf("counters %v: want drop-fib", d)
		}
	})
}

// forwarded is a datagram as it is after one hop: TTL one less, header
// checksum updated. An error quotes the packet as its sender got it.
func forwarded(d []byte) []byte {
	c := bytes.Clone(d)
	c[8]--
	binary.BigEndian.PutUint16(c[10:], 0)
	binary.BigEndian.PutUint16(c[10:], packet.Checksum(c[:20]))
	return c
}

// ICMP errors about SNATed flows (rule 23): each side gets the error in
// the terms it knows the flow by, the quote byte for byte the packet it
// sent or got, and the error is forwarded (its addresses may be the
// node's own).
func TestSNATICMPErrors(t *testing.T) {
	w := newNSWorld(t)
	// Both frontends first: an apply rewrites every master.
	fes := []control.Frontend{{Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.TCP}, {Addr: nodePort.Addr(), Port: nodePort.Port(), Proto: control.UDP}}
	w.ports[fes[0]] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: "np-tcp"}, Frontend: fes[0], Backends: backends(remotePod)}
	w.external(fes[1], bpf.SluiceLbFrontendKindFE_NODE_PORT, bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE, backends(remotePod))
	w.editMaster(fes[0], func(m *bpf.SluiceLb4Service) {
		m.Kind, m.Flags = bpf.SluiceLbFrontendKindFE_NODE_PORT, m.Flags|bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE
	})
	be := netip.MustParseAddrPort(remotePod)

	tcpIn := packet.Build(packet.Spec{Src: extClient, Dst: nodePort, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
	tcpSent := datagram(t, tcpIn)
	_, out := w.net.run(t, w.objs.SluiceIngress, tcpIn)
	tcpGot := datagram(t, out)

	udpIn := packet.Build(packet.Spec{Src: extClient, Dst: nodePort, Proto: packet.ProtoUDP, Payload: []byte("hello, backend")})
	udpSent := datagram(t, udpIn)
	_, out = w.net.run(t, w.objs.SluiceIngress, udpIn)
	udpGot := datagram(t, out)
	natPort := parse(t, out).SrcPort

	reply := packet.Build(packet.Spec{Src: be, Dst: addrPort(nodeAddr, natPort), Proto: packet.ProtoUDP, Payload: []byte("hello, client")})
	replySent := datagram(t, reply)
	_, out = w.net.run(t, w.objs.SluiceIngress, reply)
	replyGot := datagram(t, out)

	cases := []struct {
		name     string
		err      packet.ICMPError
		reason   string
		src, dst netip.Addr
		quote    []byte
	}{
		{"port unreachable from the backend, UDP",
			packet.ICMPError{Src: be.Addr(), Dst: nodeAddr, Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: udpGot},
			"icmp-error-to-client", nodePort.Addr(), extClient.Addr(), forwarded(udpSent)},
		{"fragmentation needed from the path, 8-byte TCP quote",
			packet.ICMPError{Src: peerAddr, Dst: nodeAddr, Type: packet.ICMPDestUnreach, Code: packet.ICMPFragNeeded, Rest: 1280, Quote: head(tcpGot, 28)},
			"icmp-error-to-client", peerAddr, extClient.Addr(), head(forwarded(tcpSent), 28)},
		{"client's port unreachable toward the NodePort",
			packet.ICMPError{Src: extClient.Addr(), Dst: nodePort.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: replyGot},
			"icmp-error-to-backend", nodeAddr, be.Addr(), forwarded(replySent)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := w.counts()
			verdict, out := w.net.run(t, w.objs.SluiceIngress, packet.BuildICMPError(c.err))
			if verdict != tcActRedirect {
				t.Errorf("verdict %d, want redirect", verdict)
			}
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{c.reason: 1}) {
				t.Errorf("counters %v, want %s", d, c.reason)
			}
			f := parse(t, out)
			if f.Src != c.src || f.Dst != c.dst {
				t.Errorf("outer %s -> %s, want %s -> %s", f.Src, f.Dst, c.src, c.dst)
			}
			checksumsOK(t, f)
			q, err := f.Quote()
			if err != nil {
				t.Fatal(err)
			}
			if !q.IPChecksumOK() {
				t.Error("quoted IPv4 header checksum wrong")
			}
			if got := append(bytes.Clone(q.IP), q.L4...); !bytes.Equal(got, c.quote) {
				t.Errorf("quote\n got %x\nwant %x", got, c.quote)
			}
		})
	}
}
