package trace_test

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/trace"
)

const (
	client  = "10.244.0.2"
	web     = "10.96.0.10:80" // TCP, two backends
	sticky  = "10.96.0.12:80" // TCP, ClientIP affinity, two backends
	dns     = "10.96.0.11:53" // UDP, no endpoints: reject
	svcCIDR = "10.96.0.0/16"
)

var webBackends = []string{"10.244.1.1:8080", "10.244.1.2:8080"}

func servicePort(fe string, proto control.Protocol, affinity uint32, bes ...string) *control.ServicePort {
	ap := netip.MustParseAddrPort(fe)
	p := &control.ServicePort{
		Name:            control.ServicePortName{Namespace: "t", Name: fe},
		Frontend:        control.Frontend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto},
		AffinityTimeout: affinity,
	}
	for _, b := range bes {
		a := netip.MustParseAddrPort(b)
		p.Backends = append(p.Backends, control.Backend{Addr: a.Addr(), Port: a.Port()})
	}
	return p
}

func tcp(src, dst string, flags uint8) trace.Packet {
	return trace.Packet{Proto: packet.ProtoTCP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst), TCPFlags: flags}
}

func udp(src, dst string) trace.Packet {
	return trace.Packet{Proto: packet.ProtoUDP, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst), Size: 32}
}

const (
	syn    = 0x02
	ack    = 0x10
	fin    = 0x01
	synAck = syn | ack
)

// real runs p through the datapath's own program of hook and returns the
// verdict, the packet that left, and the reasons it counted.
func (w *world) real(hook trace.Hook, p trace.Packet) (uint32, *packet.Frame, map[string]uint64) {
	w.t.Helper()
	prog := w.objs.SluiceIngress
	if hook == trace.Egress {
		prog = w.objs.SluiceEgress
	}
	before := w.counts()
	in := p.Frame()
	out := make([]byte, len(in)+256)
	opts := &ebpfRun{prog: prog, in: in, out: out}
	ret := opts.run(w.t)
	after := w.counts()
	moved := map[string]uint64{}
	for k, v := range after {
		if v != before[k] {
			moved[k] = v - before[k]
		}
	}
	f, _ := packet.Parse(opts.out)
	return ret, f, moved
}

// backendOf runs p through the real ingress program and returns where it
// was sent.
func (w *world) backendOf(p trace.Packet) netip.AddrPort {
	w.t.Helper()
	ret, f, _ := w.real(trace.Ingress, p)
	if ret != tcActPass || f == nil {
		w.t.Fatalf("setup packet %v: verdict %d", p, ret)
	}
	return netip.AddrPortFrom(f.Dst, f.DstPort)
}

const tcActPass = ^uint32(0)

var verdicts = map[string]uint32{"pass": tcActPass, "drop": 2, "reject": 7, "forward": 7}

// A trace reports what the datapath does with the packet in the state the
// maps hold, and changes none of it. Each case sets up its state with real
// packets, traces a packet, checks every map is byte for byte as it was,
// then sends the same packet through the real program on that same state:
// the verdict and the reasons must be the trace's.
func TestTraceAgreesWithTheDatapathAndChangesNothing(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world) netip.AddrPort // the backend the traced packet must go to, if known
		hook  trace.Hook
		pkt   trace.Packet
		want  []string // the trace's reasons, in order
		// frontend the trace must name; choices: a new flow's random pick
		frontend  string
		choices   int
		conntrack string // "", "forward" or "reply"
		// replyTo: the traced packet is the reply, from the backend setup
		// returned, to this client address.
		replyTo string
	}{
		{name: "new flow", hook: trace.Ingress, pkt: tcp(client+":40000", web, syn),
			want: []string{"new-flow"}, frontend: web + "/tcp", choices: 2},
		{name: "established flow",
			setup: func(w *world) netip.AddrPort { return w.backendOf(tcp(client+":40001", web, syn)) },
			hook:  trace.Ingress, pkt: tcp(client+":40001", web, ack),
			want: []string{"established"}, frontend: web + "/tcp", conntrack: "forward"},
		{name: "retransmitted SYN follows its flow",
			setup: func(w *world) netip.AddrPort { return w.backendOf(tcp(client+":40002", web, syn)) },
			hook:  trace.Ingress, pkt: tcp(client+":40002", web, syn),
			want: []string{"established"}, frontend: web + "/tcp", conntrack: "forward"},
		{name: "FIN closes",
			setup: func(w *world) netip.AddrPort { return w.backendOf(tcp(client+":40003", web, syn)) },
			hook:  trace.Ingress, pkt: tcp(client+":40003", web, fin|ack),
			want: []string{"ct-closed", "established"}, frontend: web + "/tcp", conntrack: "forward"},
		{name: "reply at egress", hook: trace.Egress,
			setup:   func(w *world) netip.AddrPort { return w.backendOf(tcp(client+":40004", web, syn)) },
			replyTo: client + ":40004",
			want:    []string{"reply"}, frontend: web + "/tcp", conntrack: "reply"},
		{name: "sticky client", hook: trace.Ingress,
			setup: func(w *world) netip.AddrPort { return w.backendOf(tcp(client+":40005", sticky, syn)) },
			pkt:   tcp(client+":40006", sticky, syn),
			want:  []string{"affinity-hit", "new-flow"}, frontend: sticky + "/tcp"},
		{name: "new sticky client", hook: trace.Ingress, pkt: tcp(client+":40007", sticky, syn),
			want: []string{"new-flow"}, frontend: sticky + "/tcp", choices: 2},
		{name: "no endpoints: reject", hook: trace.Ingress, pkt: udp(client+":40008", dns),
			want: []string{"reject-no-endpoints"}, frontend: dns + "/udp"},
		{name: "unknown port: reject", hook: trace.Ingress, pkt: tcp(client+":40009", "10.96.0.10:81", syn),
			want: []string{"reject-unknown-port"}},
		{name: "not service traffic", hook: trace.Ingress, pkt: tcp(client+":40010", "10.1.2.3:80", syn),
			want: []string{"pass"}},
		{name: "unallocated service IP: drop", hook: trace.Ingress, pkt: tcp(client+":40011", "10.96.5.5:80", syn),
			want: []string{"drop-service-cidr"}},
		{name: "egress, not a reply", hook: trace.Egress, pkt: tcp("10.244.1.1:8080", client+":39999", synAck),
			want: []string{"pass"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t,
				servicePort(web, control.TCP, 0, webBackends...),
				servicePort(sticky, control.TCP, 60, webBackends...),
				servicePort(dns, control.UDP, 0))
			w.setServiceCIDR(netip.MustParsePrefix(svcCIDR))
			var want netip.AddrPort
			if c.setup != nil {
				want = c.setup(w)
			}
			pkt := c.pkt
			if c.replyTo != "" {
				pkt = tcp(want.String(), c.replyTo, synAck)
			}

			before := w.snapshot()
			r, err := trace.Run(w.tracer, w.dp, c.hook, pkt)
			if err != nil {
				t.Fatal(err)
			}
			after := w.snapshot()
			for name := range before {
				if !slices.Equal(before[name], after[name]) {
					t.Errorf("trace changed map %s", name)
				}
			}
			if !slices.Equal(r.Reasons, c.want) {
				t.Errorf("trace reasons %v, want %v", r.Reasons, c.want)
			}
			if r.Frontend != c.frontend {
				t.Errorf("trace frontend %q, want %q", r.Frontend, c.frontend)
			}
			if r.Choices != c.choices {
				t.Errorf("trace choices %d, want %d", r.Choices, c.choices)
			}
			gotCT := ""
			if r.Conntrack != nil {
				gotCT = r.Conntrack.Kind
			}
			if gotCT != c.conntrack {
				t.Errorf("trace conntrack %q, want %q", gotCT, c.conntrack)
			}

			// The real program on the state the trace left, which is
			// the state it ran on.
			ret, out, moved := w.real(c.hook, pkt)
			if verdicts[r.Verdict] != ret {
				t.Errorf("trace verdict %s, datapath %d", r.Verdict, ret)
			}
			traced := map[string]uint64{}
			for _, reason := range r.Reasons {
				traced[reason]++
			}
			if !reflect.DeepEqual(traced, moved) {
				t.Errorf("trace reasons %v, datapath counted %v", traced, moved)
			}
			checkBackend(t, r, c.hook, out, want)
			// The snapshot sees what a real packet changes: at least
			// its counter.
			if slices.Equal(after[bpf.SluiceMapSluiceCounters], w.snapshot()[bpf.SluiceMapSluiceCounters]) {
				t.Error("the real packet moved no counter the snapshot sees")
			}
		})
	}
}

// checkBackend: a translated packet names its backend, the one the real
// packet went to when the state decides it (an established flow, a sticky
// client), one of the frontend's when a new flow picks at random.
func checkBackend(t *testing.T, r *trace.Result, hook trace.Hook, out *packet.Frame, want netip.AddrPort) {
	t.Helper()
	if r.Verdict != "pass" || r.Reasons[len(r.Reasons)-1] == "pass" {
		if r.Backend != nil || (r.Verdict != "reject" && r.Output != nil) {
			t.Errorf("untranslated packet with backend %v, output %v", r.Backend, r.Output)
		}
		if r.Verdict == "reject" && (r.Output == nil || r.Output.Proto != "icmp") {
			t.Errorf("reject without its ICMP error: output %v", r.Output)
		}
		return
	}
	if r.Backend == nil || r.Output == nil {
		t.Fatalf("translated packet without backend (%v) or output (%v)", r.Backend, r.Output)
	}
	switch hook {
	case trace.Ingress:
		if r.Output.Dst != r.Backend.Address {
			t.Errorf("output %v does not go to backend %v", r.Output, r.Backend)
		}
		if want.IsValid() && r.Backend.Address != want.String() {
			t.Errorf("trace backend %v, the flow's is %s", r.Backend, want)
		}
		if !slices.Contains(webBackends, r.Backend.Address) || r.Backend.ID == 0 {
			t.Errorf("trace backend %v is none of %v", r.Backend, webBackends)
		}
		if real := netip.AddrPortFrom(out.Dst, out.DstPort); want.IsValid() && real != want {
			t.Errorf("datapath sent the packet to %s, the trace to %s", real, want)
		}
	case trace.Egress:
		if r.Backend.Address != want.String() || r.Output.Src != web {
			t.Errorf("reply: backend %v, output %v, want from %s restored to %s", r.Backend, r.Output, want, web)
		}
	}
}
