package control

import (
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// AnnotationTriggerTime is the EndpointSlice annotation the endpoints
// controllers set to the time of the change that caused the slice's last
// update; network programming latency is measured from it.
const AnnotationTriggerTime = corev1.EndpointsLastChangeTriggerTime

// Store is the Sink both sources write to. Like kube-proxy's change
// trackers, it only records which Services changed since the last sync;
// Take hands them over. Safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	services map[serviceRef]*corev1.Service
	// slices by the Service they belong to, in name order (a Service
	// has one or a few: a list costs a tenth of a map); owner is the
	// Service each stored slice was filed under.
	slices   map[serviceRef][]*discoveryv1.EndpointSlice
	owner    map[serviceRef]serviceRef // slice namespace/name -> Service
	unowned  map[serviceRef]Problem    // slices that belong to no Service
	node     NodeInfo
	nodeSeen bool
	synced   bool
	skipped  []Problem // the source's own
	// Since the last Take:
	dirty     map[serviceRef]bool
	nodeDirty bool
	triggers  []time.Time
	queued    time.Time // the oldest change not yet taken
	onChange  func()
}

// NewStore returns an empty store; onChange (may be nil) is called, outside
// the store's lock, after every change: "sync soon".
func NewStore(onChange func()) *Store {
	return &Store{
		services: map[serviceRef]*corev1.Service{},
		slices:   map[serviceRef][]*discoveryv1.EndpointSlice{},
		owner:    map[serviceRef]serviceRef{},
		unowned:  map[serviceRef]Problem{},
		dirty:    map[serviceRef]bool{},
		onChange: onChange,
	}
}

// change runs f under the lock, then notifies.
func (s *Store) change(f func()) {
	s.mu.Lock()
	f()
	if s.queued.IsZero() {
		s.queued = time.Now()
	}
	s.mu.Unlock()
	if s.onChange != nil {
		s.onChange()
	}
}

func (s *Store) UpsertService(svc *corev1.Service) {
	if !Visible(svc.Labels) {
		s.DeleteService(svc.Namespace, svc.Name)
		return
	}
	s.change(func() {
		ref := serviceRef{svc.Namespace, svc.Name}
		s.services[ref] = svc
		s.dirty[ref] = true
	})
}

func (s *Store) DeleteService(namespace, name string) {
	s.change(func() {
		ref := serviceRef{namespace, name}
		if _, ok := s.services[ref]; ok {
			delete(s.services, ref)
			s.dirty[ref] = true
		}
	})
}

func (s *Store) UpsertSlice(es *discoveryv1.EndpointSlice) {
	s.change(func() {
		key := serviceRef{es.Namespace, es.Name}
		old := s.removeSlice(key)
		delete(s.unowned, key)
		ref, ok, p := sliceOwner(es)
		if p != nil {
			s.unowned[key] = *p
		}
		if !ok {
			return
		}
		list := s.slices[ref]
		i, _ := slices.BinarySearchFunc(list, es.Name, bySliceName)
		s.slices[ref] = slices.Insert(list, i, es)
		s.owner[key] = ref
		s.dirty[ref] = true
		// A trigger time counts once: relists and status-only updates
		// keep the annotation as it was.
		if t := triggerTime(es); !t.IsZero() && (old == nil || !triggerTime(old).Equal(t)) {
			s.triggers = append(s.triggers, t)
		}
	})
}

func (s *Store) DeleteSlice(namespace, name string) {
	s.change(func() {
		key := serviceRef{namespace, name}
		s.removeSlice(key)
		delete(s.unowned, key)
	})
}

// removeSlice drops a stored slice and marks its Service; it returns the
// slice (nil if none).
func (s *Store) removeSlice(key serviceRef) *discoveryv1.EndpointSlice {
	ref, ok := s.owner[key]
	if !ok {
		return nil
	}
	delete(s.owner, key)
	list := s.slices[ref]
	i, found := slices.BinarySearchFunc(list, key.name, bySliceName)
	var old *discoveryv1.EndpointSlice
	if found {
		old = list[i]
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(s.slices, ref)
	} else {
		s.slices[ref] = list
	}
	s.dirty[ref] = true
	return old
}

func bySliceName(es *discoveryv1.EndpointSlice, name string) int {
	return strings.Compare(es.Name, name)
}

func triggerTime(es *discoveryv1.EndpointSlice) time.Time {
	v, ok := es.Annotations[AnnotationTriggerTime]
	if !ok {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

func (s *Store) SetNode(n NodeInfo) {
	s.mu.Lock()
	same := s.nodeSeen && s.node == n
	s.mu.Unlock()
	if same {
		return
	}
	s.change(func() {
		s.node, s.nodeSeen, s.nodeDirty = n, true, true
	})
}

func (s *Store) Synced() {
	s.change(func() { s.synced = true })
}

func (s *Store) Skipped(p []Problem) {
	s.change(func() { s.skipped = p })
}

// IsSynced reports whether the source has delivered its first full list.
func (s *Store) IsSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Changes is what Take hands over: the inputs of every Service that changed
// since the last Take (all of them for a full take).
type Changes struct {
	Services    map[serviceRef]serviceInputs
	Node        NodeInfo
	NodeChanged bool
	// Triggers are the EndpointSlice trigger times of the changes.
	Triggers []time.Time
	// Queued is when the oldest of these changes arrived (zero if none).
	Queued time.Time
	// Skipped is what the source and the slice filing skipped.
	Skipped []Problem
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool { return len(c.Services) == 0 && !c.NodeChanged }

// Take returns the changes since the last Take and forgets them; with all,
// every Service counts as changed.
func (s *Store) Take(all bool) Changes {
	s.mu.Lock()
	defer s.mu.Unlock()
	if all {
		for ref := range s.services {
			s.dirty[ref] = true
		}
		for ref := range s.slices {
			s.dirty[ref] = true
		}
	}
	c := Changes{
		Services:    make(map[serviceRef]serviceInputs, len(s.dirty)),
		Node:        s.node,
		NodeChanged: s.nodeDirty,
		Triggers:    s.triggers,
		Queued:      s.queued,
	}
	for ref := range s.dirty {
		// A copy: the store's list changes with later events, the
		// tracker keeps this one.
		c.Services[ref] = serviceInputs{svc: s.services[ref], slices: slices.Clone(s.slices[ref])}
	}
	c.Skipped = append(c.Skipped, s.skipped...)
	for _, p := range s.unowned {
		c.Skipped = append(c.Skipped, p)
	}
	clear(s.dirty)
	s.nodeDirty, s.triggers, s.queued = false, nil, time.Time{}
	return c
}
