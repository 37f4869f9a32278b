package control

import (
	"cmp"
	"slices"
)

// Tracker holds the desired state and updates it Service by Service, so a
// sync pays for the Services that changed, not for all of them. What it
// holds is always what Desired computes from the same objects.
type Tracker struct {
	node    NodeInfo
	results map[serviceRef]*serviceResult
	// claims lists every service port that claims a frontend, the winner
	// (first by namespace/name) first: a frontend claimed twice goes to
	// the same Service whatever the order of events.
	claims map[Frontend][]*ServicePort
	health healthClaims
	state  *State
	// Kept up to date by Update, so that a sync does not walk every
	// Service to count them or to list problems that did not change.
	services int
	problems []Problem // sorted; valid unless problemsStale
	// problemsStale: a Service with problems, or a contested frontend,
	// was touched since problems was built.
	problemsStale bool
}

// NewTracker starts with an empty state.
func NewTracker(node NodeInfo) *Tracker {
	node.Leaving = false
	return &Tracker{
		node:    node,
		results: map[serviceRef]*serviceResult{},
		claims:  map[Frontend][]*ServicePort{},
		health:  newHealthClaims(),
		state:   &State{Ports: map[Frontend]*ServicePort{}, HealthChecks: map[uint16]HealthCheck{}},
	}
}

// State is the desired state. It is updated in place by Update and
// SetNode; callers read it between those calls.
func (t *Tracker) State() *State { return t.state }

// Services counts the Services that have at least one frontend.
func (t *Tracker) Services() int { return t.services }

// Update recomputes the given Services (a nil Service with no slices:
// gone) and returns the frontends whose desired value may have changed.
// State().HealthChecks is updated in place.
func (t *Tracker) Update(changes map[serviceRef]serviceInputs) []Frontend {
	touched := map[Frontend]bool{}
	healthTouched := map[uint16]bool{}
	for ref, in := range changes {
		if old := t.results[ref]; old != nil {
			t.account(old, -1)
			for _, sp := range old.ports {
				t.unclaim(sp)
				touched[sp.Frontend] = true
			}
			t.problemsStale = t.health.remove(ref, old, healthTouched) || t.problemsStale
		}
		if in.svc == nil && len(in.slices) == 0 {
			delete(t.results, ref)
			continue
		}
		r := computeService(in, t.node)
		t.results[ref] = r
		t.account(r, 1)
		for _, sp := range r.ports {
			t.claim(sp)
			touched[sp.Frontend] = true
		}
		t.problemsStale = t.health.add(ref, r, healthTouched) || t.problemsStale
	}
	for port := range healthTouched {
		if hc, ok := t.health.winner(port); ok {
			t.state.HealthChecks[port] = hc
		} else {
			delete(t.state.HealthChecks, port)
		}
	}
	out := make([]Frontend, 0, len(touched))
	for fe := range touched {
		if c := t.claims[fe]; len(c) > 0 {
			t.state.Ports[fe] = c[0]
		} else {
			delete(t.state.Ports, fe)
		}
		out = append(out, fe)
	}
	return out
}

// SetNode recomputes every Service when the node changed (locality and
// hints depend on it) and returns the frontends that may have changed.
func (t *Tracker) SetNode(node NodeInfo) []Frontend {
	node.Leaving = false // health only: no frontend depends on it
	if node == t.node {
		return nil
	}
	t.node = node
	all := make(map[serviceRef]serviceInputs, len(t.results))
	for ref, r := range t.results {
		all[ref] = r.in
	}
	return t.Update(all)
}

// claimOrder decides which Service gets a frontend two claim: a ClusterIP
// frontend first, then NodePort, LoadBalancer and ExternalIP, and among
// equals the first by namespace/name. Kind first, because the earlier
// kinds are allocated by the API server (cluster IPs and nodePorts are
// unique among their own) while LB IPs come from a controller and
// externalIPs from whoever may write a Service: an externalIP set to
// another Service's cluster IP and port must not capture that Service's
// traffic. kube-proxy has no such order (the first rule written wins);
// namespace/name makes the outcome independent of event order.
func claimOrder(a, b *ServicePort) int {
	return cmp.Or(cmp.Compare(claimRank(a.Kind), claimRank(b.Kind)),
		cmp.Compare(a.Name.Namespace, b.Name.Namespace), cmp.Compare(a.Name.Name, b.Name.Name))
}

func claimRank(k FrontendKind) int {
	switch k {
	case KindClusterIP:
		return 0
	case KindNodePort:
		return 1
	case KindLoadBalancer:
		return 2
	}
	return 3
}

// account adds (delta 1) or removes (-1) a result from the Service count
// and marks the problem list stale if the result has problems.
func (t *Tracker) account(r *serviceResult, delta int) {
	if len(r.ports) > 0 {
		t.services += delta
	}
	if len(r.problems) > 0 {
		t.problemsStale = true
	}
}

func (t *Tracker) claim(sp *ServicePort) {
	c := t.claims[sp.Frontend]
	i, _ := slices.BinarySearchFunc(c, sp, claimOrder)
	c = slices.Insert(c, i, sp)
	t.claims[sp.Frontend] = c
	if len(c) > 1 {
		t.problemsStale = true // a conflict appears or changes
	}
}

func (t *Tracker) unclaim(sp *ServicePort) {
	if len(t.claims[sp.Frontend]) > 1 {
		t.problemsStale = true // a conflict goes or changes
	}
	c := slices.DeleteFunc(t.claims[sp.Frontend], func(o *ServicePort) bool { return o == sp })
	if len(c) == 0 {
		delete(t.claims, sp.Frontend)
		return
	}
	t.claims[sp.Frontend] = c
}

// Problems lists what was skipped, sorted: each Service's own problems and
// every frontend claimed by more than one Service. It is rebuilt only when
// an update touched a Service with problems or a contested frontend. The
// caller may append to the result but not change its elements.
func (t *Tracker) Problems() []Problem {
	if t.problemsStale || t.problems == nil {
		t.problems = t.buildProblems()
		t.problemsStale = false
	}
	return slices.Clip(t.problems)
}

func (t *Tracker) buildProblems() []Problem {
	out := []Problem{}
	for _, r := range t.results {
		out = append(out, r.problems...)
	}
	for fe, c := range t.claims {
		for _, loser := range c[1:] {
			out = append(out, problemf("Service", loser.Name.Namespace, loser.Name.Name, SkipConflict,
				"port %q: %s frontend %s already served by %s as its %s frontend", loser.Name.Port, loser.Kind, fe, c[0].Name, c[0].Kind))
		}
	}
	out = append(out, t.health.problems()...)
	sortProblems(out)
	return out
}
