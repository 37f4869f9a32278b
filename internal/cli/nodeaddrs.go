package cli

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/sluice-lb/sluice/control"
)

// addrLister lists the node's own IPv4 addresses, in the agent's network
// namespace.
type addrLister interface {
	// Local returns every address, loopback ones included.
	Local() ([]netip.Addr, error)
	// DefaultRoute returns the addresses of the device the default
	// route leaves through (none without a default route), and its name.
	DefaultRoute() (addrs []netip.Addr, device string, err error)
}

// nodeAddrSink completes the NodeInfo a source delivers with the addresses
// NodePorts are served on, and passes it on to the sink behind it (the
// syncer's Store): the desired state depends on the Node and the flag
// only, while the addresses the node really holds are the agent's to
// find. It computes them again when the source's NodeInfo changes and,
// through LocalAddrsChanged, when the node's addresses do, so either
// change reaches the syncer as a NodeInfo change.
type nodeAddrSink struct {
	control.Sink
	flag  string // --nodeport-addresses
	addrs addrLister
	log   *slog.Logger

	mu     sync.Mutex
	node   control.NodeInfo // as the source described it
	have   bool             // the source has described it
	listen []netip.Addr     // NodePortAddrs of the NodeInfo passed on
	passed bool             // a NodeInfo was passed on
	// fallback is the fallback primary last used, so that it is logged
	// when it changes, not at every recomputation.
	fallback string
}

func newNodeAddrSink(next control.Sink, flag string, addrs addrLister, log *slog.Logger) *nodeAddrSink {
	return &nodeAddrSink{Sink: next, flag: flag, addrs: addrs, log: log}
}

// SetNode records the source's NodeInfo and passes it on with its
// NodePortAddrs.
func (s *nodeAddrSink) SetNode(n control.NodeInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.have || n != s.node {
		s.log.Info("node", "name", n.Name, "zone", n.Zone, "internalIPs", n.InternalIPs, "podCIDRs", n.PodCIDRs, "leaving", n.Leaving)
	}
	s.node, s.have = n, true
	s.updateLocked()
}

// LocalAddrsChanged computes NodePortAddrs again; nothing reaches the sink
// unless they changed, or before the source described the node.
func (s *nodeAddrSink) LocalAddrsChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.have {
		s.updateLocked()
	}
}

// ListenAddrs returns the NodePortAddrs last passed on: the addresses the
// healthCheckNodePorts listen on (rule 28).
func (s *nodeAddrSink) ListenAddrs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.listen)
}

func (s *nodeAddrSink) updateLocked() {
	info := s.node
	addrs, err := s.compute()
	if err != nil {
		// Keep serving on the addresses of before rather than none.
		s.log.Error("NodePort addresses; keeping the previous ones", "err", err, "previous", joinAddrs(s.listen))
		addrs = s.listen
	}
	info.NodePortAddrs = joinAddrs(addrs)
	if !s.passed || info.NodePortAddrs != joinAddrs(s.listen) {
		s.log.Info("NodePort addresses", "node", info.Name, "addresses", info.NodePortAddrs, "flag", s.flag)
	}
	// The Store ignores a NodeInfo equal to the last one.
	s.listen, s.passed = addrs, true
	s.Sink.SetNode(info)
}

// compute is control.NodePortAddresses of the flag, the Node's
// InternalIPs and the local addresses. Without InternalIPs (no Node
// object, or one without them) primary falls back to the addresses of the
// default route's device, else every non-loopback address.
func (s *nodeAddrSink) compute() ([]netip.Addr, error) {
	local, err := s.addrs.Local()
	if err != nil {
		return nil, err
	}
	internal := parseAddrs(s.node.InternalIPs)
	fallback := ""
	if (s.flag == "" || s.flag == "primary") && len(internal) == 0 {
		var dev string
		internal, dev, err = s.addrs.DefaultRoute()
		if err != nil {
			return nil, err
		}
		fallback = "the addresses of " + dev + ", the default route's device"
		if len(internal) == 0 {
			for _, a := range local {
				if !a.IsLoopback() {
					internal = append(internal, a)
				}
			}
			fallback = "every non-loopback IPv4 address (no default route)"
		}
	}
	out, err := control.NodePortAddresses(s.flag, internal, local)
	if err != nil {
		return nil, err
	}
	if fallback != s.fallback {
		if fallback != "" {
			s.log.Warn("the node has no InternalIPs: --nodeport-addresses primary serves NodePorts on "+fallback,
				"node", s.node.Name, "addresses", joinAddrs(out))
		} else if s.fallback != "" {
			s.log.Info("NodePorts are served on the node's InternalIPs again", "node", s.node.Name, "addresses", joinAddrs(out))
		}
		s.fallback = fallback
	}
	return out, nil
}

// parseAddrs parses a comma separated list of addresses (NodeInfo's
// InternalIPs), skipping what is no address: the API server validates
// them, a manifest may not have.
func parseAddrs(s string) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(f)); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
