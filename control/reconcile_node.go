package control

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluice-lb/sluice/maps"
)

// nodeConfig is the part of sluice_config (struct datapath_config) the
// reconciler writes: the node's SNAT address, its pod CIDR (with the node
// address, the sources that get a two-scope frontend's internal set) and
// the SNAT port range. The service CIDR fields are the loader's.
type nodeConfig struct {
	addr, podCIDR, podMask uint32 // __be32, as the map holds them
	portMin, portMax       uint16 // host order
}

// nodeConfigOf derives the node's fields: the first IPv4 InternalIP (the
// address SNATed flows leave with and the node's own traffic comes from),
// else the first IPv4 NodePort address, else none; the first IPv4 pod
// CIDR.
func nodeConfigOf(n NodeInfo, ports [2]uint16) nodeConfig {
	c := nodeConfig{portMin: ports[0], portMax: ports[1]}
	if a, ok := firstAddr4(n.InternalIPs); ok {
		c.addr = maps.Addr4(a)
	} else if a, ok := firstAddr4(n.NodePortAddrs); ok {
		c.addr = maps.Addr4(a)
	}
	for _, s := range strings.Split(n.PodCIDRs, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is4() || p.Bits() == 0 {
			continue
		}
		p = p.Masked()
		var mask [4]byte
		binary.BigEndian.PutUint32(mask[:], ^uint32(0)<<(32-p.Bits()))
		c.podCIDR, c.podMask = maps.Addr4(p.Addr()), maps.Addr4(netip.AddrFrom4(mask))
		break
	}
	return c
}

func firstAddr4(list string) (netip.Addr, bool) {
	for _, s := range strings.Split(list, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && a.Unmap().Is4() {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// SetNode makes n the node the datapath's node fields describe. They are
// written by the next Apply or ApplyFrontends (before any frontend), and
// repaired by every full Apply; until the first SetNode the maps keep what
// they hold. Written only with ReconcilerOptions.Config.
func (r *Reconciler) SetNode(n NodeInfo) {
	c := nodeConfigOf(n, r.opts.SNATPorts)
	r.node = &c
	r.filterNode()
}

// filterNode keeps the prefilter's bit of the node's SNAT address: the
// replies of SNATed flows are addressed to it.
func (r *Reconciler) filterNode() {
	var addr uint32
	if r.node != nil {
		addr = r.node.addr
	}
	if addr == r.nodeFilter {
		return
	}
	if r.nodeFilter != 0 {
		r.prefilter.address(r.nodeFilter, -1)
	}
	if addr != 0 {
		r.prefilter.address(addr, 1)
	}
	r.nodeFilter = addr
}

func (r *Reconciler) nodeDirty() bool {
	return r.node != nil && r.opts.Config != nil && *r.node != r.nodeHave
}

// readNode reads the node fields sluice_config holds.
func (r *Reconciler) readNode() error {
	r.nodeHave = nodeConfig{}
	if r.opts.Config == nil {
		return nil
	}
	cfg, err := r.opts.Config.Lookup(0)
	if err != nil {
		return fmt.Errorf("read sluice_config: %w", err)
	}
	r.nodeHave = nodeConfig{cfg.NodeAddr4, cfg.PodCidr4, cfg.PodCidr4Mask, cfg.SnatPortMin, cfg.SnatPortMax}
	return nil
}

// writeNode writes the node fields, keeping the rest of sluice_config (the
// loader's service CIDR) as the map holds it.
func (r *Reconciler) writeNode(*plan) error {
	if !r.nodeDirty() {
		return nil
	}
	cfg, err := r.opts.Config.Lookup(0)
	if err != nil {
		return fmt.Errorf("write node config: read sluice_config: %w", err)
	}
	c := *r.node
	cfg.NodeAddr4, cfg.PodCidr4, cfg.PodCidr4Mask = c.addr, c.podCIDR, c.podMask
	cfg.SnatPortMin, cfg.SnatPortMax = c.portMin, c.portMax
	if err := r.write("write node config", r.opts.Config.Put(0, cfg)); err != nil {
		return err
	}
	r.nodeHave = c
	return nil
}
