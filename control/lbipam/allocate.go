package lbipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Service is what the allocator knows of a Service of type LoadBalancer
// that is LB-IPAM's (no spec.loadBalancerClass).
type Service struct {
	Key     string // namespace/name
	Created time.Time
	// Requested is spec.loadBalancerIP as written ("" none).
	Requested string
	// Current are the IPv4 addresses of status.loadBalancer.ingress.
	Current []netip.Addr
}

// Event reasons of the problems Allocate reports.
const (
	ReasonExhausted = "LBIPPoolExhausted"
	ReasonRequested = "LBIPRequestedUnavailable"
	ReasonConflict  = "LBIPConflict"
	ReasonAssigned  = "LBIPAssigned"
	ReasonReleased  = "LBIPReleased"
)

// Problem is why a Service has no address, or not the one it had or asked
// for: the Warning Event the controller records on it.
type Problem struct {
	Service string
	Reason  string
	Message string
}

// Allocate gives every Service at most one address of pool, a pure
// function of its arguments:
//
//   - Services are taken oldest first (creation time, then namespace/name):
//     of two claiming one address, the older keeps it.
//   - A Service with spec.loadBalancerIP gets that address when it is a
//     usable address of the pool not held by an older Service; else none,
//     with a Problem saying why.
//   - A Service keeps the first usable pool address of its status (an
//     agent's restart, or a new leader, renumbers nothing).
//   - The others get the lowest free address, in pool order; when none is
//     left, a Problem naming the pool.
//
// Services absent from the result have no address.
func Allocate(pool Pool, services []Service) (map[string]netip.Addr, []Problem) {
	svcs := slices.Clone(services)
	slices.SortFunc(svcs, func(a, b Service) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	out := map[string]netip.Addr{}
	holder := map[netip.Addr]string{}
	var problems []Problem
	var waiting []Service // no address yet, none asked for
	for _, s := range svcs {
		if s.Requested != "" {
			if msg := claimRequested(pool, holder, s); msg != "" {
				problems = append(problems, Problem{s.Key, ReasonRequested, msg})
				continue
			}
			a, _ := netip.ParseAddr(s.Requested)
			out[s.Key], holder[a] = a, s.Key
			continue
		}
		kept := false
		for _, a := range s.Current {
			if !pool.Usable(a) {
				continue
			}
			if h, taken := holder[a]; taken {
				problems = append(problems, Problem{s.Key, ReasonConflict,
					fmt.Sprintf("address %s is held by the older Service %s: given another", a, h)})
				continue
			}
			out[s.Key], holder[a], kept = a, s.Key, true
			break
		}
		if !kept {
			waiting = append(waiting, s)
		}
	}
	// The lowest free addresses, in the services' order, in one walk.
	next := 0
	pool.each(func(a netip.Addr) bool {
		if next == len(waiting) {
			return false
		}
		if _, taken := holder[a]; !taken {
			out[waiting[next].Key], holder[a] = a, waiting[next].Key
			next++
		}
		return true
	})
	for _, s := range waiting[next:] {
		problems = append(problems, Problem{s.Key, ReasonExhausted,
			fmt.Sprintf("no free address in pool %s (%d addresses, all assigned)", pool, pool.size())})
	}
	return out, problems
}

// claimRequested says why s cannot have its spec.loadBalancerIP, "" when
// it can.
func claimRequested(pool Pool, holder map[netip.Addr]string, s Service) string {
	a, err := netip.ParseAddr(s.Requested)
	switch {
	case err != nil || !a.Is4():
		return fmt.Sprintf("spec.loadBalancerIP %q is not an IPv4 address", s.Requested)
	case !pool.Contains(a):
		return fmt.Sprintf("spec.loadBalancerIP %s is not in pool %s", a, pool)
	case !pool.Usable(a):
		return fmt.Sprintf("spec.loadBalancerIP %s is the network or broadcast address of its CIDR in pool %s", a, pool)
	}
	if h, taken := holder[a]; taken {
		return fmt.Sprintf("spec.loadBalancerIP %s is held by the older Service %s", a, h)
	}
	return ""
}
