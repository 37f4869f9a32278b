package bpf_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// The socket programs cannot be run by BPF_PROG_TEST_RUN (the kernel has
// no test run for cgroup sock_addr programs), so these tests make real
// calls: a client process (this test binary re-executed, sockClientEnv
// naming what it does) runs in a cgroup of the test's, with the programs
// attached, inside a network namespace holding backends on its loopback,
// and uses the net package as any host-network program would.

const sockClientEnv = "SLUICE_TEST_SOCK_CLIENT"

func TestMain(m *testing.M) {
	if op := os.Getenv(sockClientEnv); op != "" {
		os.Exit(sockClient(op))
	}
	os.Exit(m.Run())
}

const (
	sockVIP      = "10.96.0.10"
	sockEmptyVIP = "10.96.0.20"
	sockNode     = "192.168.50.1"
)

var sockBackends = []string{"10.244.1.2:8080", "10.244.2.2:8080", "10.244.3.2:8080"}

// sockResult is what a client saw.
type sockResult struct {
	Replies []string `json:"replies"` // what the backend answered: its own address
	Peer    string   `json:"peer"`    // getpeername of a connected socket
	From    []string `json:"from"`    // recvfrom's source of each UDP reply
	Err     string   `json:"err"`
}

// sockClient is the re-executed client: "tcp ADDR", "udp ADDR" (connected),
// "udpto ADDR N" (unconnected, N datagrams); the result on stdout.
func sockClient(op string) int {
	f := strings.Fields(op)
	var r sockResult
	err := func() error {
		switch f[0] {
		case "tcp":
			c, err := net.DialTimeout("tcp4", f[1], 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			if r.Peer, err = peerOf(c.(*net.TCPConn)); err != nil {
				return err
			}
			if got := c.RemoteAddr().String(); got != r.Peer {
				return fmt.Errorf("net.Conn.RemoteAddr %s, getpeername %s", got, r.Peer)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			b, err := io.ReadAll(c)
			r.Replies = append(r.Replies, string(b))
			return err
		case "udp":
			c, err := net.Dial("udp4", f[1])
			if err != nil {
				return err
			}
			defer c.Close()
			uc := c.(*net.UDPConn)
			if r.Peer, err = peerOf(uc); err != nil {
				return err
			}
			return udpExchange(uc, nil, 1, &r)
		case "udpto":
			dst, err := net.ResolveUDPAddr("udp4", f[1])
			if err != nil {
				return err
			}
			n, _ := strconv.Atoi(f[2])
			uc, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			defer uc.Close()
			return udpExchange(uc, dst, n, &r)
		}
		return fmt.Errorf("unknown client op %q", op)
	}()
	if err != nil {
		r.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

// udpExchange sends n datagrams (to dst, or on the connected socket when
// dst is nil) and reads each reply with its source.
func udpExchange(uc *net.UDPConn, dst *net.UDPAddr, n int, r *sockResult) error {
	buf := make([]byte, 256)
	for range n {
		var err error
		if dst != nil {
			_, err = uc.WriteToUDP([]byte("hi"), dst)
		} else {
			_, err = uc.Write([]byte("hi"))
		}
		if err != nil {
			return err
		}
		uc.SetReadDeadline(time.Now().Add(3 * time.Second))
		k, from, err := uc.ReadFromUDP(buf)
		if err != nil {
			return err
		}
		r.Replies = append(r.Replies, string(buf[:k]))
		r.From = append(r.From, from.String())
	}
	return nil
}

// peerOf calls getpeername(2) on the socket itself.
func peerOf(c syscall.Conn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var sa unix.Sockaddr
	cerr := rc.Control(func(fd uintptr) { sa, err = unix.Getpeername(int(fd)) })
	if err = errors.Join(cerr, err); err != nil {
		return "", err
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return "", fmt.Errorf("peer %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port)).String(), nil
}

// sockWorld is a datapath (its maps programmed through the real control
// plane) with the socket programs attached to a cgroup of the test's, and
// a namespace whose loopback holds the backends, the node's address and a
// listener on the VIP itself, which only an untranslated call reaches.
type sockWorld struct {
	*world
	ns *netlab.NS
	cg string
}

var sockNSSeq atomic.Int32

func newSockNS(t *testing.T, addrs ...string) *netlab.NS {
	t.Helper()
	ns, err := netlab.NewNS(fmt.Sprintf("sl-sock-%d-%d", os.Getpid(), sockNSSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	if err := ns.LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := ns.AddrAdd("lo", netip.PrefixFrom(netip.MustParseAddr(a), 32)); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// newSockWorld: the socket programs as the agent loads them by default,
// Pods' TCP connects translated too.
func newSockWorld(t *testing.T) *sockWorld {
	t.Helper()
	return newSockWorldWith(t, loader.SockOptions{})
}

func newSockWorldWith(t *testing.T, so loader.SockOptions) *sockWorld {
	t.Helper()
	w := newWorld(t)
	addrs := []string{sockNode, sockVIP}
	for _, b := range sockBackends {
		addrs = append(addrs, netip.MustParseAddrPort(b).Addr().String())
	}
	s := &sockWorld{world: w, ns: newSockNS(t, addrs...), cg: testenv.Cgroup(t)}
	for _, b := range sockBackends {
		s.listen(t, s.ns, b, b)
	}
	s.listen(t, s.ns, sockVIP+":80", "vip-itself")
	s.listen(t, s.ns, sockNode+":2222", "node-itself")
	if err := w.dp.Config.Put(0, bpf.SluiceDatapathConfig{NodeAddr4: maps.Addr4(netip.MustParseAddr(sockNode))}); err != nil {
		t.Fatal(err)
	}
	// Loaded in the namespace, as the agent loads in the node's: the
	// programs translate that namespace's sockets.
	var objs *bpf.SluiceSockObjects
	if err := s.ns.Do(func() (err error) {
		objs, err = loader.LoadSock(&w.objs.SluiceMaps, so)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	for attach, prog := range map[ebpf.AttachType]*ebpf.Program{
		ebpf.AttachCGroupUDP4Recvmsg:      objs.SluiceSockRecvmsg4,
		ebpf.AttachCgroupInet4GetPeername: objs.SluiceSockGetpeername4,
		ebpf.AttachCGroupInet4Connect:     objs.SluiceSockConnect4,
		ebpf.AttachCGroupUDP4Sendmsg:      objs.SluiceSockSendmsg4,
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: s.cg, Attach: attach, Program: prog})
		if err != nil {
			t.Fatalf("attach %s: %v", attach, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	return s
}

// listen serves TCP and UDP on addr in ns, answering name to every
// connection and datagram.
func (s *sockWorld) listen(t *testing.T, ns *netlab.NS, addr, name string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp4", addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
}

// client runs one client op in ns, in the test's cgroup or not.
func (s *sockWorld) client(t *testing.T, ns *netlab.NS, inCgroup bool, op string) sockResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), sockClientEnv+"="+op)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if inCgroup {
		f, err := os.Open(s.cg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Born in the cgroup (clone3 CLONE_INTO_CGROUP): no moment
		// outside it.
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	if err := ns.Do(cmd.Run); err != nil {
		t.Fatalf("client %q: %v: %s", op, err, stderr.String())
	}
	var r sockResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("client %q output %q: %v", op, out.String(), err)
	}
	return r
}

// in runs a client in the cgroup, in the world's namespace.
func (s *sockWorld) in(t *testing.T, op string) sockResult { return s.client(t, s.ns, true, op) }

func sockAddr(fe control.Frontend) string {
	return netip.AddrPortFrom(fe.Addr, fe.Port).String()
}

func isSockBackend(reply string) bool {
	for _, b := range sockBackends {
		if reply == b {
			return true
		}
	}
	return false
}

func (s *sockWorld) expectBackend(t *testing.T, r sockResult, frontend string) {
	t.Helper()
	if r.Err != "" {
		t.Fatalf("%s: %s", frontend, r.Err)
	}
	for _, rep := range r.Replies {
		if !isSockBackend(rep) {
			t.Errorf("%s: answered by %q, want a backend", frontend, rep)
		}
	}
	if r.Peer != "" && r.Peer != frontend {
		t.Errorf("getpeername %s, want the frontend %s", r.Peer, frontend)
	}
	for _, f := range r.From {
		if f != frontend {
			t.Errorf("reply from %s, want the frontend %s", f, frontend)
		}
	}
}

// refusal is the error a refused call shows: ECONNREFUSED where the
// kernel has bpf_set_retval for these programs (5.18+), else EPERM.
func refusal(t *testing.T) string {
	t.Helper()
	err := features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval)
	if err == nil {
		return "connection refused"
	}
	if testenv.KernelAtLeast("5.18") {
		t.Fatalf("kernel 5.18+ without bpf_set_retval for sock_addr programs: %v", err)
	}
	return "operation not permitted"
}

func expectErr(t *testing.T, r sockResult, what, want string) {
	t.Helper()
	if !strings.Contains(r.Err, want) {
		t.Errorf("%s: error %q, want %q (replies %v)", what, r.Err, want, r.Replies)
	}
}

func (s *sockWorld) delta(t *testing.T, before map[string]uint64, want map[string]uint64) {
	t.Helper()
	got := delta(before, s.counts())
	for k, v := range want {
		if got[k] != v {
			t.Errorf("counter %s moved by %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

func TestSockTCP(t *testing.T) {
	s := newSockWorld(t)
	fe := sockVIP + ":80"
	s.serve(frontend(fe, control.TCP), backends(sockBackends...))

	before := s.counts()
	s.expectBackend(t, s.in(t, "tcp "+fe), fe)
	// getpeername twice: the net package's own at dial, then the client's.
	s.delta(t, before, map[string]uint64{"sock-connect": 1, "sock-reply": 2})

	// Outside the cgroup nothing is translated: the VIP's own listener answers.
	if r := s.client(t, s.ns, false, "tcp "+fe); r.Err != "" || len(r.Replies) != 1 || r.Replies[0] != "vip-itself" {
		t.Errorf("client outside the cgroup: %+v, want the VIP's own listener", r)
	}
}

func TestSockUDPConnected(t *testing.T) {
	s := newSockWorld(t)
	fe := sockVIP + ":80"
	s.serve(frontend(fe, control.UDP), backends(sockBackends...))

	before := s.counts()
	r := s.in(t, "udp "+fe)
	s.expectBackend(t, r, fe)
	if len(r.From) != 1 {
		t.Fatalf("replies %+v", r)
	}
	s.delta(t, before, map[string]uint64{"sock-connect": 1})
}

func TestSockUDPUnconnected(t *testing.T) {
	s := newSockWorld(t)
	fe := sockVIP + ":80"
	s.serve(frontend(fe, control.UDP), backends(sockBackends...))

	const n = 8
	before := s.counts()
	r := s.in(t, fmt.Sprintf("udpto %s %d", fe, n))
	s.expectBackend(t, r, fe)
	if len(r.From) != n {
		t.Fatalf("%d replies, want %d: %+v", len(r.From), n, r)
	}
	// One socket's datagrams to one frontend stay on one backend, as a
	// pod's follow their conntrack flow.
	for _, rep := range r.Replies {
		if rep != r.Replies[0] {
			t.Errorf("datagrams of one socket went to %v, want one backend", r.Replies)
			break
		}
	}
	s.delta(t, before, map[string]uint64{"sock-sendmsg": n, "sock-reply": n})
	if r := s.client(t, s.ns, false, "udpto "+fe+" 1"); r.Err != "" || r.Replies[0] != "vip-itself" || r.From[0] != fe {
		t.Errorf("client outside the cgroup: %+v, want the VIP's own listener", r)
	}
}

func TestSockNodePort(t *testing.T) {
	s := newSockWorld(t)
	for _, fe := range []string{sockNode + ":30080", "127.0.0.1:30081"} {
		s.serve(frontend(fe, control.TCP), backends(sockBackends...))
		s.serve(frontend(fe, control.UDP), backends(sockBackends...))
		s.expectBackend(t, s.in(t, "tcp "+fe), fe)
		s.expectBackend(t, s.in(t, "udpto "+fe+" 2"), fe)
	}
	// The node's address carries a marker entry now; its other ports
	// are the node's own services and stay reachable.
	if r := s.in(t, "tcp "+sockNode+":2222"); r.Err != "" || r.Replies[0] != "node-itself" {
		t.Errorf("node's own port: %+v", r)
	}
}

func TestSockTwoScopes(t *testing.T) {
	s := newSockWorld(t)
	fe := frontend(sockVIP+":80", control.TCP)
	s.serve(fe, backends(sockBackends[0]))
	// The internal scope's set: sockBackends[1], whose id a second
	// frontend gives it.
	other := frontend("10.96.9.9:80", control.TCP)
	s.serve(other, backends(sockBackends[1]))
	internalID := s.slotBackends(other)[netip.MustParseAddrPort(sockBackends[1])]
	master, err := s.dp.LB4.Services.Lookup(lbKeyOf(fe, 0))
	if err != nil {
		t.Fatal(err)
	}
	k := lbKeyOf(fe, 0)
	k.Scope = uint8(bpf.SluiceLbScopeLB_SCOPE_INTERNAL)
	internal := master
	internal.Count = 1
	if err := s.dp.LB4.Services.Put(k, internal); err != nil {
		t.Fatal(err)
	}
	k.BackendSlot = 1
	if err := s.dp.LB4.Services.Put(k, bpf.SluiceLb4Service{BackendId: internalID}); err != nil {
		t.Fatal(err)
	}
	s.editMaster(fe, func(m *bpf.SluiceLb4Service) { m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_TWO_SCOPES })

	for range 4 {
		r := s.in(t, "tcp "+sockAddr(fe))
		s.expectBackend(t, r, sockAddr(fe))
		if r.Replies[0] != sockBackends[1] {
			t.Fatalf("the node reached %s, want the internal scope's %s", r.Replies[0], sockBackends[1])
		}
	}
}

func TestSockRefused(t *testing.T) {
	s := newSockWorld(t)
	refused := refusal(t)
	empty := frontend(sockEmptyVIP+":80", control.TCP)
	s.serve(empty, nil)
	s.serve(frontend(sockEmptyVIP+":80", control.UDP), nil)
	s.serve(frontend(sockVIP+":80", control.TCP), backends(sockBackends...))

	before := s.counts()
	expectErr(t, s.in(t, "tcp "+sockAddr(empty)), "TCP, no endpoints", refused)
	expectErr(t, s.in(t, "udp "+sockAddr(empty)), "connected UDP, no endpoints", refused)
	expectErr(t, s.in(t, "udpto "+sockAddr(empty)+" 1"), "unconnected UDP, no endpoints", refused)
	// An active service IP on a port it does not serve (rule 17), and
	// a protocol it does not serve on a port it does.
	expectErr(t, s.in(t, "tcp "+sockVIP+":81"), "unserved port", refused)
	expectErr(t, s.in(t, "udp "+sockVIP+":80"), "unserved protocol", refused)
	s.delta(t, before, map[string]uint64{"sock-reject": 5, "sock-connect": 0})

	// No endpoint in the set that applies (DROP): refused too, EPERM.
	s.editMaster(empty, func(m *bpf.SluiceLb4Service) { m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY })
	before = s.counts()
	expectErr(t, s.in(t, "tcp "+sockAddr(empty)), "DROP", "operation not permitted")
	s.delta(t, before, map[string]uint64{"sock-drop": 1})
}

func TestSockAffinity(t *testing.T) {
	s := newSockWorld(t)
	fe := frontend(sockVIP+":80", control.TCP)
	s.serve(fe, backends(sockBackends...))
	s.setAffinity(fe, 7, 60)
	first := ""
	for range 6 {
		r := s.in(t, "tcp "+sockAddr(fe))
		s.expectBackend(t, r, sockAddr(fe))
		if first == "" {
			first = r.Replies[0]
		} else if r.Replies[0] != first {
			t.Fatalf("affinity: %s then %s", first, r.Replies[0])
		}
	}
	a, err := s.dp.LB4.Affinity.Lookup(bpf.SluiceLb4AffinityKey{AffinityId: 7, Client: maps.Addr4(netip.MustParseAddr(sockNode))})
	if err != nil {
		t.Fatalf("the node's affinity entry: %v", err)
	}
	if want := s.slotBackends(fe)[netip.MustParseAddrPort(first)]; a.BackendId != want {
		t.Errorf("affinity entry names backend %d, want %d", a.BackendId, want)
	}
}

func TestSockSourceRanges(t *testing.T) {
	s := newSockWorld(t)
	fe := frontend("203.0.113.10:80", control.TCP)
	s.serve(fe, backends(sockBackends...))
	s.editMaster(fe, func(m *bpf.SluiceLb4Service) { m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES })
	expectErr(t, s.in(t, "tcp "+sockAddr(fe)), "node outside the source ranges", "operation not permitted")

	master, err := s.dp.LB4.Services.Lookup(lbKeyOf(fe, 0))
	if err != nil {
		t.Fatal(err)
	}
	rk := bpf.SluiceLb4SrcRangeKey{Prefixlen: 32 + 24, RevNatId: master.RevNatId, Addr: maps.Addr4(netip.MustParseAddr("192.168.50.0"))}
	if err := s.dp.LB4.SourceRanges.Put(rk, 1); err != nil {
		t.Fatal(err)
	}
	s.expectBackend(t, s.in(t, "tcp "+sockAddr(fe)), sockAddr(fe))
}

// newSockPod is a Pod of the world's node: another network namespace,
// whose processes run in the cgroup (the programs sit on the node's cgroup
// root, whose subtree holds its Pods). Its loopback holds the backends'
// addresses, each answering its own address as the node's do, so that a
// translated connect is seen to reach one; and the VIP on ports 80 to 82
// and 127.0.0.1:30081, answering "pod-side": only an untranslated call
// reaches those.
func newSockPod(t *testing.T, s *sockWorld) *netlab.NS {
	t.Helper()
	if _, err := loader.NetnsCookie(); err != nil {
		testenv.SkipOnOldKernel(t, "5.14", "SO_NETNS_COOKIE")
		t.Fatalf("SO_NETNS_COOKIE: %v", err)
	}
	addrs := []string{sockVIP}
	for _, b := range sockBackends {
		addrs = append(addrs, netip.MustParseAddrPort(b).Addr().String())
	}
	pod := newSockNS(t, addrs...)
	for _, b := range sockBackends {
		s.listen(t, pod, b, b)
	}
	for _, a := range []string{sockVIP + ":80", sockVIP + ":81", sockVIP + ":82", "127.0.0.1:30081"} {
		s.listen(t, pod, a, "pod-side")
	}
	return pod
}

func expectPodSide(t *testing.T, r sockResult, what string) {
	t.Helper()
	if r.Err != "" || len(r.Replies) == 0 || r.Replies[0] != "pod-side" {
		t.Errorf("%s: %+v, want it untranslated (the Pod's own listener)", what, r)
	}
}

// A Pod's TCP connect is translated as the node's is; what needs the
// Pod's address (affinity, source ranges), its UDP, and its own loopback
// are left to the packet datapath.
func TestSockPods(t *testing.T) {
	s := newSockWorld(t)
	pod := newSockPod(t, s)
	refused := refusal(t)
	fe := frontend(sockVIP+":80", control.TCP)
	s.serve(fe, backends(sockBackends...))
	s.serve(frontend(sockVIP+":80", control.UDP), backends(sockBackends...))
	affinity := frontend(sockVIP+":81", control.TCP)
	s.serve(affinity, backends(sockBackends...))
	ranges := frontend(sockVIP+":82", control.TCP)
	s.serve(ranges, backends(sockBackends...))
	loopback := frontend("127.0.0.1:30081", control.TCP)
	s.serve(loopback, backends(sockBackends...))
	empty := frontend(sockEmptyVIP+":80", control.TCP)
	s.serve(empty, nil)
	// Edited once every frontend is served: serving reprograms them all.
	s.setAffinity(affinity, 7, 60)
	s.editMaster(ranges, func(m *bpf.SluiceLb4Service) { m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES })

	before := s.counts()
	for range 3 {
		s.expectBackend(t, s.client(t, pod, true, "tcp "+sockAddr(fe)), sockAddr(fe))
	}
	// getpeername twice a connect, as for the node.
	s.delta(t, before, map[string]uint64{"sock-connect": 3, "sock-reply": 6})

	before = s.counts()
	expectPodSide(t, s.client(t, pod, true, "udp "+sockAddr(fe)), "connected UDP")
	expectPodSide(t, s.client(t, pod, true, "udpto "+sockAddr(fe)+" 2"), "unconnected UDP")
	expectPodSide(t, s.client(t, pod, true, "tcp "+sockAddr(affinity)), "session affinity")
	expectPodSide(t, s.client(t, pod, true, "tcp "+sockAddr(ranges)), "source ranges")
	expectPodSide(t, s.client(t, pod, true, "tcp "+sockAddr(loopback)), "the Pod's loopback")
	s.delta(t, before, map[string]uint64{"sock-connect": 0, "sock-sendmsg": 0, "sock-reply": 0, "sock-drop": 0})
	// The same calls from the node are its own to translate.
	s.expectBackend(t, s.in(t, "tcp "+sockAddr(affinity)), sockAddr(affinity))
	s.expectBackend(t, s.in(t, "tcp "+sockAddr(loopback)), sockAddr(loopback))

	before = s.counts()
	expectErr(t, s.client(t, pod, true, "tcp "+sockAddr(empty)), "a Pod's TCP, no endpoints", refused)
	s.delta(t, before, map[string]uint64{"sock-reject": 1})

	// Out of the cgroup, nothing is translated.
	expectPodSide(t, s.client(t, pod, false, "tcp "+sockAddr(fe)), "a process out of the cgroup")
}

// --socket-lb-host-only: a Pod's sockets are all the packet datapath's.
func TestSockPodsHostOnly(t *testing.T) {
	s := newSockWorldWith(t, loader.SockOptions{HostOnly: true})
	pod := newSockPod(t, s)
	fe := frontend(sockVIP+":80", control.TCP)
	s.serve(fe, backends(sockBackends...))
	s.serve(frontend(sockVIP+":80", control.UDP), backends(sockBackends...))

	before := s.counts()
	expectPodSide(t, s.client(t, pod, true, "tcp "+sockAddr(fe)), "a Pod's TCP")
	expectPodSide(t, s.client(t, pod, true, "udpto "+sockAddr(fe)+" 1"), "a Pod's UDP")
	s.delta(t, before, map[string]uint64{"sock-connect": 0, "sock-sendmsg": 0})
	s.expectBackend(t, s.in(t, "tcp "+sockAddr(fe)), sockAddr(fe))
}
