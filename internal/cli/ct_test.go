package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/frontendnames"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// ctWorld is a datapath pinned under a temporary bpffs directory and
// programmed through the control plane, whose flows are made by running
// packets through its programs (BPF_PROG_TEST_RUN); the CLI reads the
// pins as it reads an agent's. agent serves the names an agent would.
type ctWorld struct {
	t      *testing.T
	dir    string
	dp     *loader.Datapath
	agent  string
	client netip.Addr
}

var (
	ctWeb     = control.Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: control.TCP}
	ctDNS     = control.Frontend{Addr: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: control.UDP}
	ctWebBE   = netip.MustParseAddrPort("10.1.0.5:8080")
	ctDNSBE   = netip.MustParseAddrPort("10.1.0.6:5353")
	ctClient1 = netip.MustParseAddrPort("192.168.7.2:40001")
	ctClient2 = netip.MustParseAddrPort("192.168.7.2:40002")
)

func newCTWorld(t *testing.T) *ctWorld {
	t.Helper()
	testenv.Privileged(t)
	dir := filepath.Join(loader.DefaultBPFFS, fmt.Sprintf("sluice-clitest-%d-%s", os.Getpid(), t.Name()))
	t.Cleanup(func() { os.RemoveAll(dir) })
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	dp, err := loader.Load(loader.Options{PinDir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	rec, err := control.NewReconciler(dp.Maps.LB4, log)
	if err != nil {
		t.Fatal(err)
	}
	state := &control.State{Ports: map[control.Frontend]*control.ServicePort{
		ctWeb: {Name: control.ServicePortName{Namespace: "shop", Name: "web", Port: "http", Proto: control.TCP}, Frontend: ctWeb,
			Backends: []control.Backend{{Addr: ctWebBE.Addr(), Port: ctWebBE.Port()}}},
		ctDNS: {Name: control.ServicePortName{Namespace: "kube-system", Name: "dns", Proto: control.UDP}, Frontend: ctDNS,
			Backends: []control.Backend{{Addr: ctDNSBE.Addr(), Port: ctDNSBE.Port()}}},
	}}
	if _, problems, err := rec.Apply(state); err != nil || len(problems) > 0 {
		t.Fatalf("apply: %v %v", err, problems)
	}
	names := &frontendnames.Table{}
	names.Set(state)
	srv := httptest.NewServer(names)
	t.Cleanup(srv.Close)
	return &ctWorld{t: t, dir: dir, dp: dp, agent: strings.TrimPrefix(srv.URL, "http://")}
}

func (w *ctWorld) send(prog *ebpf.Program, s packet.Spec) packet.Frame {
	w.t.Helper()
	in := packet.Build(s)
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	if _, err := prog.Run(opts); err != nil {
		w.t.Fatal(err)
	}
	f, err := packet.Parse(opts.DataOut)
	if err != nil {
		w.t.Fatal(err)
	}
	return *f
}

// tcpHandshake runs a client's SYN, the backend's SYN-ACK and the client's
// ACK: an established flow.
func (w *ctWorld) tcpHandshake(client netip.AddrPort) {
	w.t.Helper()
	vip := netip.AddrPortFrom(ctWeb.Addr, ctWeb.Port)
	if f := w.send(w.dp.Objs.SluiceIngress, packet.Spec{Src: client, Dst: vip, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn}); netip.AddrPortFrom(f.Dst, f.DstPort) != ctWebBE {
		w.t.Fatalf("SYN went to %s:%d", f.Dst, f.DstPort)
	}
	w.send(w.dp.Objs.SluiceEgress, packet.Spec{Src: ctWebBE, Dst: client, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn | packet.TCPAck})
	w.send(w.dp.Objs.SluiceIngress, packet.Spec{Src: client, Dst: vip, Proto: packet.ProtoTCP, TCPFlags: packet.TCPAck})
}

// udpQuery sends one datagram, unanswered.
func (w *ctWorld) udpQuery(client netip.AddrPort) {
	w.t.Helper()
	w.send(w.dp.Objs.SluiceIngress, packet.Spec{Src: client, Dst: netip.AddrPortFrom(ctDNS.Addr, ctDNS.Port), Proto: packet.ProtoUDP, Payload: []byte("q")})
}

func (w *ctWorld) list() []ctFlow {
	w.t.Helper()
	code, stdout, stderr := run(w.t, "ct", "list", "--pin-dir", w.dir, "--agent", w.agent, "-o", "json")
	if code != 0 || stderr != "" {
		w.t.Fatalf("ct list: exit %d, stderr:\n%s", code, stderr)
	}
	var flows []ctFlow
	if err := json.Unmarshal([]byte(stdout), &flows); err != nil {
		w.t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	return flows
}

func (w *ctWorld) entries() int {
	w.t.Helper()
	n := 0
	if err := w.dp.Maps.CT4.Each(func(bpf.SluiceCt4Key, bpf.SluiceCt4Entry) bool { n++; return true }); err != nil {
		w.t.Fatal(err)
	}
	return n
}

func TestCTListShowsFlows(t *testing.T) {
	w := newCTWorld(t)
	w.tcpHandshake(ctClient1)
	w.udpQuery(ctClient2)

	flows := w.list()
	if len(flows) != 2 {
		t.Fatalf("%d flows, want 2 (each pair joined): %+v", len(flows), flows)
	}
	byFrontend := map[string]ctFlow{}
	for _, f := range flows {
		byFrontend[f.Frontend] = f
	}
	web, dns := byFrontend[ctWeb.String()], byFrontend[ctDNS.String()]
	if web.Client != ctClient1.String() || web.Backend != ctWebBE.String() || web.BackendID == 0 || web.RevNatID == 0 ||
		web.Proto != "TCP" || web.State != "established" || web.Service != "shop/web:http" {
		t.Errorf("TCP flow: %+v", web)
	}
	if web.Forward == nil || web.Reply == nil {
		t.Fatalf("TCP flow without both entries: %+v", web)
	}
	if got := strings.Join(web.Forward.Flags, ","); got != "seen-reply" {
		t.Errorf("forward flags %q, want seen-reply", got)
	}
	if got := strings.Join(web.Reply.Flags, ","); got != "peer-told" {
		t.Errorf("reply flags %q, want peer-told", got)
	}
	if want := ctWebBE.String() + " -> " + ctClient1.String(); web.Reply.Tuple != want {
		t.Errorf("reply tuple %q, want %q", web.Reply.Tuple, want)
	}
	// Established: the forward entry has the long lifetime; the flow's time
	// left is the longer entry's.
	if web.TimeLeftSeconds != max(web.Forward.TimeLeftSeconds, web.Reply.TimeLeftSeconds) || web.TimeLeftSeconds <= 60 {
		t.Errorf("time left %d (forward %d, reply %d)", web.TimeLeftSeconds, web.Forward.TimeLeftSeconds, web.Reply.TimeLeftSeconds)
	}
	if web.AgeSeconds < 0 || web.AgeSeconds > web.TimeLeftSeconds {
		t.Errorf("age %d", web.AgeSeconds)
	}
	if dns.Client != ctClient2.String() || dns.Backend != ctDNSBE.String() || dns.State != "udp" || dns.Service != "kube-system/dns" {
		t.Errorf("UDP flow: %+v", dns)
	}

	// The table names the same, and without the agent the flows are
	// still listed, by frontend.
	code, stdout, stderr := run(t, "ct", "list", "--pin-dir", w.dir, "--agent", w.agent)
	if code != 0 || !strings.Contains(stdout, "shop/web:http") || !strings.Contains(stdout, "established") {
		t.Errorf("table: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "ct", "list", "--pin-dir", w.dir, "--agent", "127.0.0.1:1", "-o", "json")
	if code != 0 || !strings.Contains(stderr, "Service names left out") || !strings.Contains(stdout, ctWeb.String()) {
		t.Errorf("agent unreachable: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestCTFlush(t *testing.T) {
	w := newCTWorld(t)
	w.tcpHandshake(ctClient1)
	w.tcpHandshake(ctClient2)
	w.udpQuery(ctClient1)
	if n := w.entries(); n != 6 {
		t.Fatalf("%d entries, want 6", n)
	}

	code, stdout, stderr := run(t, "ct", "flush", "--pin-dir", w.dir, "--frontend", "10.96.0.53:53/udp")
	if code != 0 || stdout != "flushed 1 flows\n" {
		t.Fatalf("flush --frontend: exit %d, %q, stderr:\n%s", code, stdout, stderr)
	}
	if n := w.entries(); n != 4 {
		t.Errorf("%d entries after flushing the UDP flow, want the 4 of the TCP flows", n)
	}
	for _, f := range w.list() {
		if f.Frontend != ctWeb.String() || f.Forward == nil || f.Reply == nil {
			t.Errorf("left after flush --frontend: %+v", f)
		}
	}

	code, stdout, stderr = run(t, "ct", "flush", "--pin-dir", w.dir, "--service", "shop/web", "--agent", w.agent)
	if code != 0 || stdout != "flushed 2 flows\n" {
		t.Fatalf("flush --service: exit %d, %q, stderr:\n%s", code, stdout, stderr)
	}
	if n := w.entries(); n != 0 {
		t.Errorf("%d entries left", n)
	}

	w.tcpHandshake(ctClient1)
	w.udpQuery(ctClient2)
	code, stdout, stderr = run(t, "ct", "flush", "--pin-dir", w.dir)
	if code != 0 || stdout != "flushed 2 flows\n" || w.entries() != 0 {
		t.Errorf("flush all: exit %d, %q, %d entries left; stderr:\n%s", code, stdout, w.entries(), stderr)
	}

	// The flows of a new connection translate again: a flush is not a
	// change of service.
	w.tcpHandshake(ctClient1)
	if n := w.entries(); n != 2 {
		t.Errorf("%d entries after a new connection, want 2", n)
	}
}

func TestCTFlushChecksItsFilter(t *testing.T) {
	for _, args := range [][]string{
		{"--frontend", "10.96.0.10"},
		{"--frontend", "10.96.0.10:80/ICMP"},
		{"--service", "web"},
		{"--service", "a/b", "--frontend", "10.96.0.10:80/TCP"},
		{"--service", "a/b", "--agent", ""},
	} {
		code, stdout, stderr := run(t, append([]string{"ct", "flush", "--pin-dir", t.TempDir()}, args...)...)
		if code == 0 || stdout != "" || stderr == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want a refusal", args, code, stdout, stderr)
		}
	}
}

// A SNATed flow's entries (as the datapath writes them: the reply entry
// keyed by backend -> node address and port, holding the client) are
// joined into one flow showing the node's address and port.
func TestCTListShowsSNATFlows(t *testing.T) {
	w := newCTWorld(t)
	master, err := w.dp.Maps.LB4.Services.Lookup(bpf.SluiceLb4Key{Address: maps.Addr4(ctWeb.Addr), Dport: maps.Port(ctWeb.Port), Proto: packet.ProtoTCP})
	if err != nil {
		t.Fatal(err)
	}
	node := netip.MustParseAddrPort("192.168.50.11:61001")
	fk := bpf.SluiceCt4Key{Saddr: maps.Addr4(ctClient1.Addr()), Daddr: maps.Addr4(ctWeb.Addr), Sport: maps.Port(ctClient1.Port()), Dport: maps.Port(ctWeb.Port), Proto: packet.ProtoTCP}
	rk := bpf.SluiceCt4Key{Saddr: maps.Addr4(ctWebBE.Addr()), Daddr: maps.Addr4(node.Addr()), Sport: maps.Port(ctWebBE.Port()), Dport: maps.Port(node.Port()), Proto: packet.ProtoTCP}
	snat := bpf.SluiceCtFlagsCT_F_SNAT
	if err := w.dp.Maps.CT4.Put(fk, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, Flags: snat, BackendAddr: maps.Addr4(ctWebBE.Addr()), BackendPort: maps.Port(ctWebBE.Port()),
		RevNatId: master.RevNatId, NatAddr: maps.Addr4(node.Addr()), NatPort: maps.Port(node.Port())}); err != nil {
		t.Fatal(err)
	}
	if err := w.dp.Maps.CT4.Put(rk, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_REPLY, Flags: snat, RevNatId: master.RevNatId,
		NatAddr: maps.Addr4(ctClient1.Addr()), NatPort: maps.Port(ctClient1.Port())}); err != nil {
		t.Fatal(err)
	}
	flows := w.list()
	if len(flows) != 1 || flows[0].Forward == nil || flows[0].Reply == nil {
		t.Fatalf("flows %+v: want one, both entries joined", flows)
	}
	if f := flows[0]; f.Client != ctClient1.String() || f.SNAT != node.String() || f.Backend != ctWebBE.String() {
		t.Errorf("flow %+v: want client %s, snat %s, backend %s", f, ctClient1, node, ctWebBE)
	}
	// The reply entry alone names the client it keeps.
	if err := w.dp.Maps.CT4.Delete(fk); err != nil {
		t.Fatal(err)
	}
	if flows := w.list(); len(flows) != 1 || flows[0].Client != ctClient1.String() || flows[0].SNAT != node.String() {
		t.Errorf("lone reply entry: %+v", flows)
	}
	_, stdout, _ := run(t, "ct", "list", "--pin-dir", w.dir, "--agent", w.agent)
	if !strings.Contains(stdout, "via "+node.String()) {
		t.Errorf("table without the SNAT address:\n%s", stdout)
	}
}
