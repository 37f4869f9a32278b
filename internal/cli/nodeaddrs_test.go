package cli

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-lb/sluice/control"
)

// fakeAddrs is an addrLister whose addresses the test sets.
type fakeAddrs struct {
	mu           sync.Mutex
	local        []netip.Addr
	defaultAddrs []netip.Addr
	defaultDev   string
}

func (f *fakeAddrs) Local() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.local, nil
}

func (f *fakeAddrs) DefaultRoute() ([]netip.Addr, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.defaultAddrs, f.defaultDev, nil
}

func (f *fakeAddrs) set(local []netip.Addr, dev string, defaultAddrs []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local, f.defaultDev, f.defaultAddrs = local, dev, defaultAddrs
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// logBuffer is a text logger into a buffer.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// taken is the node as the syncer takes it from the store, and whether it
// changed since the last take.
func taken(st *control.Store) (control.NodeInfo, bool) {
	ch := st.Take(false)
	return ch.Node, ch.NodeChanged
}

// The NodeInfo the syncer gets carries the NodePort addresses, computed
// from the flag, the Node's InternalIPs and the local addresses, again
// when the Node or the local addresses change, and only a change reaches
// the syncer.
func TestNodeAddrSinkPrimary(t *testing.T) {
	st := control.NewStore(nil)
	f := &fakeAddrs{}
	f.set(addrs("127.0.0.1", "192.168.0.10", "10.0.0.10"), "eth0", addrs("192.168.0.10"))
	var logs logBuffer
	s := newNodeAddrSink(st, "primary", f, logs.logger())

	s.LocalAddrsChanged() // before the source described the node: nothing
	if _, changed := taken(st); changed {
		t.Fatal("a NodeInfo reached the store before the source described the node")
	}

	s.SetNode(control.NodeInfo{Name: "n1", InternalIPs: "10.0.0.10,192.168.0.10", PodCIDRs: "10.244.1.0/24"})
	want := control.NodeInfo{Name: "n1", InternalIPs: "10.0.0.10,192.168.0.10", PodCIDRs: "10.244.1.0/24", NodePortAddrs: "10.0.0.10,192.168.0.10"}
	if n, changed := taken(st); !changed || n != want {
		t.Fatalf("store has %+v (changed %v), want %+v", n, changed, want)
	}
	if got := joinAddrs(s.ListenAddrs()); got != "10.0.0.10,192.168.0.10" {
		t.Errorf("listen addresses %s", got)
	}

	// A new local address does not change primary's addresses: no
	// change reaches the syncer.
	f.set(addrs("127.0.0.1", "192.168.0.10", "10.0.0.10", "172.16.0.1"), "eth0", addrs("192.168.0.10"))
	s.LocalAddrsChanged()
	if n, changed := taken(st); changed {
		t.Errorf("an unrelated local address changed the node: %+v", n)
	}

	// The Node loses its InternalIPs: primary falls back to the default
	// route's device, and says so.
	s.SetNode(control.NodeInfo{Name: "n1"})
	if n, _ := taken(st); n.NodePortAddrs != "192.168.0.10" {
		t.Errorf("without InternalIPs: %q, want the default route device's 192.168.0.10", n.NodePortAddrs)
	}
	if !strings.Contains(logs.String(), "the addresses of eth0, the default route's device") {
		t.Errorf("the fallback was not logged:\n%s", logs.String())
	}
	// The device's address changes: followed.
	f.set(addrs("127.0.0.1", "192.168.0.20"), "eth0", addrs("192.168.0.20"))
	s.LocalAddrsChanged()
	if n, changed := taken(st); !changed || n.NodePortAddrs != "192.168.0.20" {
		t.Errorf("after the device's address changed: %+v (changed %v)", n, changed)
	}
	// No default route: every non-loopback address.
	f.set(addrs("127.0.0.1", "192.168.0.20", "172.16.0.1"), "", nil)
	s.LocalAddrsChanged()
	if n, _ := taken(st); n.NodePortAddrs != "172.16.0.1,192.168.0.20" {
		t.Errorf("without a default route: %q, want every non-loopback address", n.NodePortAddrs)
	}
	if !strings.Contains(logs.String(), "every non-loopback IPv4 address (no default route)") {
		t.Errorf("the second fallback was not logged:\n%s", logs.String())
	}
}

// With CIDRs the local addresses inside them serve, loopback only when
// named, and a local address added or removed is a NodeInfo change.
func TestNodeAddrSinkCIDRs(t *testing.T) {
	st := control.NewStore(nil)
	f := &fakeAddrs{}
	f.set(addrs("127.0.0.1", "192.168.0.10", "10.0.0.10"), "eth0", addrs("192.168.0.10"))
	s := newNodeAddrSink(st, "192.168.0.0/16,127.0.0.0/8", f, slog.New(slog.DiscardHandler))
	s.SetNode(control.NodeInfo{Name: "n1", InternalIPs: "10.0.0.10"})
	if n, _ := taken(st); n.NodePortAddrs != "127.0.0.1,192.168.0.10" {
		t.Errorf("NodePortAddrs %q, want 127.0.0.1,192.168.0.10", n.NodePortAddrs)
	}
	f.set(addrs("127.0.0.1", "192.168.0.10", "192.168.7.7", "10.0.0.10"), "eth0", addrs("192.168.0.10"))
	s.LocalAddrsChanged()
	if n, changed := taken(st); !changed || n.NodePortAddrs != "127.0.0.1,192.168.0.10,192.168.7.7" {
		t.Errorf("after an address was added: %+v (changed %v)", n, changed)
	}
	f.set(addrs("127.0.0.1", "192.168.7.7"), "eth0", nil)
	s.LocalAddrsChanged()
	if n, changed := taken(st); !changed || n.NodePortAddrs != "127.0.0.1,192.168.7.7" {
		t.Errorf("after an address was removed: %+v (changed %v)", n, changed)
	}
	if got := joinAddrs(s.ListenAddrs()); got != "127.0.0.1,192.168.7.7" {
		t.Errorf("listen addresses %s", got)
	}
}
