package control

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netutils "k8s.io/utils/net"
)

// externalInputs is what a Service's external frontends are made of: the
// addresses they are on and the traffic policy they share.
type externalInputs struct {
	// nodePorts: the Service's nodePorts are served (type NodePort or
	// LoadBalancer), on nodeAddrs (rule 18).
	nodePorts   bool
	nodeAddrs   []netip.Addr
	externalIPs []netip.Addr // rule 19
	lbIPs       []netip.Addr // rule 20
	// sourceRanges restrict the LoadBalancer frontends (rule 21); nil:
	// no restriction.
	sourceRanges []netip.Prefix
	// policyLocal: externalTrafficPolicy Local applies (rule 13).
	policyLocal bool
}

// externalOf reads the external addresses of a Service (rules 3, 18-21),
// reporting what it cannot use.
func (r *serviceResult) externalOf(svc *corev1.Service, node NodeInfo) externalInputs {
	ext := externalInputs{
		nodePorts:   svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer,
		externalIPs: r.externalIPsOf(svc),
		lbIPs:       r.lbIPsOf(svc),
	}
	if ext.nodePorts {
		ext.nodeAddrs = parseAddrList(node.NodePortAddrs)
	}
	// As the API server defaults it: the policy means something only
	// where there is external traffic.
	ext.policyLocal = svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		(ext.nodePorts || len(svc.Spec.ExternalIPs) > 0)
	ext.sourceRanges = r.sourceRangesOf(svc, ext.lbIPs, node)
	return ext
}

// externalIPsOf is spec.externalIPs (rule 19): IPv4 only (rule 3), parsed
// leniently (rule 6); empty entries are ignored, as the API server lets
// them through; unparsable and special ones are reported.
func (r *serviceResult) externalIPsOf(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, s := range svc.Spec.ExternalIPs {
		if strings.TrimSpace(s) == "" {
			continue
		}
		a, ok := parseIPSloppy(s)
		switch {
		case !ok:
			r.problem(SkipInvalidIP, "externalIPs: %q is not an IP address", s)
		case !a.Is4():
		case specialIP(a) != "":
			r.problem(SkipInvalidIP, "externalIPs: %s is %s: not served", a, specialIP(a))
		default:
			out = append(out, a)
		}
	}
	return sortedUnique(out)
}

// lbIPsOf is status.loadBalancer.ingress[].ip (rule 20): served unless
// its ipMode is Proxy (the load balancer then proxies to the nodes
// itself and expects no rule for its IP). An ingress with a hostname
// and no IP cannot be served and is reported.
func (r *serviceResult) lbIPsOf(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP {
			if *ing.IPMode != corev1.LoadBalancerIPModeProxy {
				r.problem(SkipInvalidIP, "status.loadBalancer.ingress[%d]: unknown ipMode %q: not served", i, *ing.IPMode)
			}
			continue
		}
		if ing.IP == "" {
			// Load balancers that give a hostname (and no IP) mostly
			// send to the nodePorts, which are served; reported all
			// the same, since a VIP-style one would go unserved.
			if ing.Hostname != "" {
				r.problem(SkipLBHostname, "status.loadBalancer.ingress[%d]: hostname %s without ip: not served", i, ing.Hostname)
			}
			continue
		}
		a, ok := parseIPSloppy(ing.IP)
		switch {
		case !ok:
			r.problem(SkipInvalidIP, "status.loadBalancer.ingress[%d]: ip %q is not an IP address", i, ing.IP)
		case !a.Is4():
		case specialIP(a) != "":
			r.problem(SkipInvalidIP, "status.loadBalancer.ingress[%d]: ip %s is %s: not served", i, a, specialIP(a))
		default:
			out = append(out, a)
		}
	}
	return sortedUnique(out)
}

// specialIP names what kind of address a frontend must never be on (the
// API server refuses these as externalIPs; a manifest may not): a
// frontend on one would capture the node's own or link-local traffic.
func specialIP(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "a multicast or broadcast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	}
	return ""
}

// sourceRangesOf is spec.loadBalancerSourceRanges as the LoadBalancer
// frontends apply it (rule 21), masked, sorted and unique. Like
// kube-proxy: entries are trimmed and parsed leniently as CIDRs (a bare
// IP is not a CIDR: reported and ignored, as kube-proxy ignores it);
// other families are left out (rule 3); when no IPv4 range is left, or one
// is 0.0.0.0/0, there is no restriction. When a range holds one of the
// node's InternalIPs, the Service's LB IPs are allowed as sources too: a
// VIP-style load balancer often puts its VIP on the node, and the node's
// own requests to it then come from the VIP.
func (r *serviceResult) sourceRangesOf(svc *corev1.Service, lbIPs []netip.Addr, node NodeInfo) []netip.Prefix {
	var out []netip.Prefix
	all := false
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		t := strings.TrimSpace(s)
		if t == "" {
			continue
		}
		p, ok := parseCIDRSloppy(t)
		switch {
		case !ok:
			r.problem(SkipInvalidIP, "loadBalancerSourceRanges: %q is not a CIDR: ignored", s)
		case !p.Addr().Is4():
		case p.Bits() == 0:
			all = true
		default:
			out = append(out, p)
		}
	}
	if all || len(out) == 0 {
		return nil
	}
	nodeInside := slices.ContainsFunc(parseAddrList(node.InternalIPs), func(a netip.Addr) bool {
		return slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Contains(a) })
	})
	if nodeInside {
		for _, a := range lbIPs {
			out = append(out, netip.PrefixFrom(a, 32))
		}
	}
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out)
}

// external adds the NodePort, LoadBalancer and ExternalIP frontends of
// every port, in that order (see add), with the traffic policy of rules
// 13 and 26; internalTrafficPolicy plays no part (rule 12). Session
// affinity applies to every frontend of a service port (rule 22).
func (f *frontends) external(ports []*portInputs, ext externalInputs, affinity uint32) {
	mk := func(p *portInputs, kind FrontendKind, addr netip.Addr, port uint16) *ServicePort {
		sp := &ServicePort{Name: p.name, Frontend: Frontend{Addr: addr, Port: port, Proto: p.name.Proto}, Kind: kind, AffinityTimeout: affinity}
		if ext.policyLocal {
			// Rule 13: external clients get the Local set, unSNATed,
			// DROP when it is empty while endpoints exist elsewhere
			// (rule 14); this node's pods and the node itself get the
			// Cluster set, SNATed when the backend is remote.
			sp.Backends, sp.DropEmpty = p.local, len(p.local) == 0 && p.usable
			sp.Internal = &ScopeSet{Backends: p.cluster, DropEmpty: len(p.cluster) == 0 && p.usable, SNATRemote: true}
		} else {
			// Rules 9, 11, 26: the Cluster set, SNATed when remote.
			sp.Backends, sp.SNATRemote = p.cluster, true
		}
		if kind == KindLoadBalancer {
			sp.SourceRanges = ext.sourceRanges
		}
		return sp
	}
	if ext.nodePorts {
		var tcp []uint16
		for _, p := range ports {
			if p.nodePort == 0 {
				continue
			}
			if p.nodePort < 1 || p.nodePort > 65535 {
				f.r.problem(SkipInvalidPort, "port %q: nodePort %d out of range 1-65535", p.name.Port, p.nodePort)
				continue
			}
			if p.name.Proto == TCP {
				tcp = append(tcp, uint16(p.nodePort))
			}
			for _, a := range ext.nodeAddrs {
				f.add(mk(p, KindNodePort, a, uint16(p.nodePort)))
			}
		}
		slices.Sort(tcp)
		f.r.nodePorts = slices.Compact(tcp)
	}
	for _, p := range ports {
		for _, a := range ext.lbIPs {
			f.add(mk(p, KindLoadBalancer, a, p.port))
		}
	}
	for _, p := range ports {
		for _, a := range ext.externalIPs {
			f.add(mk(p, KindExternalIP, a, p.port))
		}
	}
}

// parseAddrList parses a NodeInfo list (comma separated) into its IPv4
// addresses, sorted and unique; anything else is left out (the agent
// wrote the list).
func parseAddrList(s string) []netip.Addr {
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		if a, ok := parseIPSloppy(f); ok && a.Is4() {
			out = append(out, a)
		}
	}
	return sortedUnique(out)
}

// parseCIDRSloppy parses a CIDR as Kubernetes' validation historically
// accepted it (rule 6: IPv4 octets with leading zeros, spaces around),
// masked.
func parseCIDRSloppy(s string) (netip.Prefix, bool) {
	_, n, err := netutils.ParseCIDRSloppy(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	if !ok {
		return netip.Prefix{}, false
	}
	if a.Is4In6() {
		a = a.Unmap()
		if ones >= 96 && len(n.Mask) == 16 {
			ones -= 96
		}
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func sortedUnique(addrs []netip.Addr) []netip.Addr {
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
