package test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// The ICMP error REJECT sends is correct byte for byte as the client
// receives it, for a TCP SYN and a UDP datagram from the client's own
// sockets: on a veth these leave the client CHECKSUM_PARTIAL, their L4
// checksum to be filled in by whoever transmits them last. With the node's
// end of the veth offloading checksums, the ICMP error reaches the client
// as it was written; without (tx-checksumming off), the kernel fills in
// checksums in software on the way out, and an error still marked PARTIAL
// would get one written over the quoted IP header (TCP) or the ICMP
// header (UDP), and be dropped by the client's stack.
func TestRejectICMPErrorIsIntact(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("node tx checksum offload %v", offload), func(t *testing.T) {
			c := newCluster(t, 1, "auto")
			c.write("whoami.yaml", whoamiManifest(1))
			c.startAgent()
			if err := setTxChecksum(c.topo.Node, netlab.NodeClientDev, offload); err != nil {
				t.Fatal(err)
			}
			cases := []struct {
				proto, addr, reason string
			}{
				{"tcp", emptyVIP + ":80", "reject-no-endpoints"},
				{"tcp", vip + ":81", "reject-unknown-port"},
				{"udp", emptyVIP + ":80", "reject-unknown-port"},
				{"udp", vip + ":81", "reject-unknown-port"},
			}
			for _, tc := range cases {
				t.Run(tc.proto+" "+tc.addr, func(t *testing.T) {
					before := c.counter(tc.reason)
					capt, err := openCapture(c.topo.Client, "eth0")
					if err != nil {
						t.Fatal(err)
					}
					defer capt.close()
					local, err := c.rejectedCall(tc.proto, tc.addr)
					if err != nil {
						t.Fatal(err)
					}
					dst := netip.MustParseAddrPort(tc.addr)
					f, err := capt.icmpFrom(dst.Addr(), testenv.Scaled(2*time.Second))
					if err != nil {
						t.Fatal(err)
					}
					checkICMPError(t, f, tc.proto, local, dst)
					if got := c.counter(tc.reason) - before; got != 1 {
						t.Errorf("%s moved by %d, want 1", tc.reason, got)
					}
				})
			}
		})
	}
}

// rejectedCall makes one TCP connection attempt or sends one UDP datagram
// from the client pod to addr, expects the kernel to report
// ECONNREFUSED (which it does only for an ICMP error whose checksum it
// verified, or trusted), and returns the local address it used.
func (c *cluster) rejectedCall(proto, addr string) (netip.AddrPort, error) {
	var local netip.AddrPort
	err := c.topo.Client.Do(func() error {
		if proto == "tcp" {
			// A fixed local port, so the quoted SYN can be matched.
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{Port: 40123}, Control: reuseAddr}
			conn, err := d.Dial("tcp", addr)
			if conn != nil {
				conn.Close()
			}
			local = netip.AddrPortFrom(netlab.ClientAddr, 40123)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("dial %s: %v, want ECONNREFUSED", addr, err)
			}
			return nil
		}
		conn, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		if _, err := conn.Write([]byte("x")); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(testenv.Scaled(2 * time.Second)))
		_, err = conn.Read(make([]byte, 16))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("udp read from %s: %v, want ECONNREFUSED", addr, err)
		}
		return nil
	})
	return local, err
}

// checkICMPError verifies a port unreachable about the packet from local
// to dst, every checksum computed here from the bytes received.
func checkICMPError(t *testing.T, f *packet.Frame, proto string, local, dst netip.AddrPort) {
	t.Helper()
	if !f.IPChecksumOK() {
		t.Errorf("IP header checksum wrong: % x", f.IP)
	}
	if !f.L4ChecksumOK() {
		t.Errorf("ICMP checksum wrong: % x", f.L4)
	}
	if f.Src != dst.Addr() || f.Dst != local.Addr() {
		t.Errorf("ICMP %s -> %s, want %s -> %s", f.Src, f.Dst, dst.Addr(), local.Addr())
	}
	if len(f.L4) != 8+20+8 {
		t.Fatalf("ICMP message of %d bytes, want 36: % x", len(f.L4), f.L4)
	}
	if f.L4[0] != 3 || f.L4[1] != 3 || binary.BigEndian.Uint32(f.L4[4:]) != 0 {
		t.Errorf("ICMP header % x, want type 3 code 3, unused 0", f.L4[:8])
	}
	quoted, l4 := f.L4[8:28], f.L4[28:]
	// The quoted header is the client's, intact: its own checksum holds.
	if packet.Checksum(quoted) != 0 {
		t.Errorf("quoted IP header corrupted (checksum does not hold): % x", quoted)
	}
	wantProto := byte(packet.ProtoTCP)
	if proto == "udp" {
		wantProto = packet.ProtoUDP
	}
	qsrc, qdst := netip.AddrFrom4([4]byte(quoted[12:16])), netip.AddrFrom4([4]byte(quoted[16:20]))
	if quoted[9] != wantProto || qsrc != local.Addr() || qdst != dst.Addr() {
		t.Errorf("quoted header proto %d %s -> %s, want %d %s -> %s", quoted[9], qsrc, qdst, wantProto, local.Addr(), dst.Addr())
	}
	sport, dport := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	if sport != local.Port() || dport != dst.Port() {
		t.Errorf("quoted ports %d -> %d, want %d -> %d", sport, dport, local.Port(), dst.Port())
	}
}

// capture is an AF_PACKET socket on one device of a namespace: frames as
// the device received them, before the stack looked at them.
type capture struct{ fd int }

func openCapture(ns *netlab.NS, dev string) (*capture, error) {
	var c capture
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	return &c, err
}

func (c *capture) close() { unix.Close(c.fd) }

// icmpFrom returns the first received ICMP frame from src.
func (c *capture) icmpFrom(src netip.Addr, timeout time.Duration) (*packet.Frame, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("no ICMP from %s within %s", src, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, err
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f, err := packet.Parse(append([]byte(nil), buf[:n]...))
		if err == nil && f.Proto == packet.ProtoICMP && f.Src == src {
			return f, nil
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// setTxChecksum turns a device's transmit checksum offload on or off, as
// `ethtool -K dev tx on|off` does (SIOCETHTOOL, ETHTOOL_STXCSUM), and
// reads it back.
func setTxChecksum(ns *netlab.NS, dev string, on bool) error {
	const (
		siocEthtool    = 0x8946
		ethtoolGTxCsum = 0x16
		ethtoolSTxCsum = 0x17
	)
	type ethtoolValue struct{ cmd, data uint32 }
	type ifreq struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ioctl := func(v *ethtoolValue) error {
			var ifr ifreq
			copy(ifr.name[:], dev)
			ifr.data = uintptr(unsafe.Pointer(v))
			_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
			runtime.KeepAlive(v)
			if errno != 0 {
				return errno
			}
			return nil
		}
		want := uint32(0)
		if on {
			want = 1
		}
		if err := ioctl(&ethtoolValue{cmd: ethtoolSTxCsum, data: want}); err != nil {
			return fmt.Errorf("set tx checksum offload of %s: %w", dev, err)
		}
		got := ethtoolValue{cmd: ethtoolGTxCsum}
		if err := ioctl(&got); err != nil {
			return fmt.Errorf("read tx checksum offload of %s: %w", dev, err)
		}
		if got.data != want {
			return fmt.Errorf("tx checksum offload of %s is %d, want %d", dev, got.data, want)
		}
		return nil
	})
}

// --reject-rate and --reject-burst reach the datapath's bucket settings;
// without them the agent writes zeros, the datapath's defaults.
func TestRejectRateFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bpf.SluiceRejectRatelimit
	}{
		{nil, bpf.SluiceRejectRatelimit{}},
		{[]string{"--reject-rate", "7", "--reject-burst", "9"}, bpf.SluiceRejectRatelimit{Rate: 7, Burst: 9}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := newCluster(t, 1, "auto")
			c.write("whoami.yaml", whoamiManifest(1))
			c.agent = agenttest.Start(t, c.topo.Node, c.agentLog, nil, append([]string{
				"agent", "--manifests", c.manifests, "--pin-dir", c.pinDir,
				"--node-name", c.topo.Prefix + "-node", "--service-cidr", "10.96.0.0/12"}, tc.args...)...)
			if err := cli.WaitServing(c.topo.Node, cli.DefaultHealthzAddr, testenv.Scaled(10*time.Second)); err != nil {
				t.Fatal(err)
			}
			m, err := ebpf.LoadPinnedMap(filepath.Join(c.pinDir, bpf.SluiceMapSluiceRejectRate), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var got bpf.SluiceRejectRatelimit
			if err := m.Lookup(uint32(0), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("sluice_reject_rate %+v, want %+v", got, tc.want)
			}
		})
	}
}
