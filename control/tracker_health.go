package control

import (
	"cmp"
	"slices"
)

// healthClaims settles the healthCheckNodePorts (rule 28) across
// Services, incrementally like the frontend claims: a port two Services
// ask for goes to the first by namespace/name, and a port that is also a
// TCP nodePort of any Service is served to none (the datapath translates
// the nodePort's traffic before a server on the node could see it).
type healthClaims struct {
	byPort map[uint16][]healthClaim // sorted by Service
	// nodePorts holds, per TCP nodePort, the Services that have it,
	// sorted.
	nodePorts map[uint16][]serviceRef
}

type healthClaim struct {
	ref serviceRef
	hc  HealthCheck
}

func newHealthClaims() healthClaims {
	return healthClaims{byPort: map[uint16][]healthClaim{}, nodePorts: map[uint16][]serviceRef{}}
}

func compareRefs(a, b serviceRef) int {
	return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

func byRef(c healthClaim, ref serviceRef) int { return compareRefs(c.ref, ref) }

// contested reports whether a port's claims make a problem.
func (h *healthClaims) contested(port uint16) bool {
	n := len(h.byPort[port])
	return n > 1 || (n > 0 && len(h.nodePorts[port]) > 0)
}

// add files a result's health check and nodePorts, marking the ports it
// touches; it reports whether that changes a problem.
func (h *healthClaims) add(ref serviceRef, r *serviceResult, touched map[uint16]bool) (problems bool) {
	if r.health != nil {
		port := r.health.Port
		c := h.byPort[port]
		i, _ := slices.BinarySearchFunc(c, ref, byRef)
		h.byPort[port] = slices.Insert(c, i, healthClaim{ref, *r.health})
		touched[port] = true
		problems = problems || h.contested(port)
	}
	for _, port := range r.nodePorts {
		c := h.nodePorts[port]
		i, _ := slices.BinarySearchFunc(c, ref, compareRefs)
		h.nodePorts[port] = slices.Insert(c, i, ref)
		touched[port] = true
		problems = problems || h.contested(port)
	}
	return problems
}

// remove undoes add for the same result.
func (h *healthClaims) remove(ref serviceRef, r *serviceResult, touched map[uint16]bool) (problems bool) {
	if r.health != nil {
		port := r.health.Port
		problems = problems || h.contested(port)
		c := slices.DeleteFunc(h.byPort[port], func(c healthClaim) bool { return c.ref == ref })
		if len(c) == 0 {
			delete(h.byPort, port)
		} else {
			h.byPort[port] = c
		}
		touched[port] = true
	}
	for _, port := range r.nodePorts {
		problems = problems || h.contested(port)
		c := slices.DeleteFunc(h.nodePorts[port], func(o serviceRef) bool { return o == ref })
		if len(c) == 0 {
			delete(h.nodePorts, port)
		} else {
			h.nodePorts[port] = c
		}
		touched[port] = true
	}
	return problems
}

// winner is the health check served on a port, if any.
func (h *healthClaims) winner(port uint16) (HealthCheck, bool) {
	c := h.byPort[port]
	if len(c) == 0 || len(h.nodePorts[port]) > 0 {
		return HealthCheck{}, false
	}
	return c[0].hc, true
}

func (h *healthClaims) problems() []Problem {
	var out []Problem
	for port, c := range h.byPort {
		if users := h.nodePorts[port]; len(users) > 0 {
			for _, cl := range c {
				out = append(out, problemf("Service", cl.ref.namespace, cl.ref.name, SkipConflict,
					"healthCheckNodePort %d is also a TCP nodePort of %s: no health check served", port, users[0]))
			}
			continue
		}
		for _, loser := range c[1:] {
			out = append(out, problemf("Service", loser.ref.namespace, loser.ref.name, SkipConflict,
				"healthCheckNodePort %d already used by %s: no health check served", port, c[0].ref))
		}
	}
	return out
}
