package control

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Reconciler programs a State into the lb4 maps. It keeps a copy of what it
// programmed, read back from the maps when it starts (and at every full
// resync) so that a restarted agent keeps the backend and reverse-NAT ids
// existing conntrack entries refer to, and so that entries changed behind
// its back are repaired.
//
// Every apply is make-before-break: backends, reverse-NAT, affinity match
// and source-range entries are written before the slots and flags that
// need them, slots before the master entry whose count exposes them, a
// frontend's internal (scope 1) master before the scope 0 master that
// sends this node's own clients to it, and removals happen in the
// opposite order, so a packet never sees a half-written service.
//
// The cost of ApplyFrontends follows the size of the change, not of the
// state: only the named frontends are compared; backends, prefilter bits
// and map entries are reference-counted rather than recounted; a backend
// keeps its slot while it stays, so one endpoint change rewrites one slot.
type Reconciler struct {
	lb   maps.LB4
	log  *slog.Logger
	opts ReconcilerOptions

	frontends  map[Frontend]*programmed
	backends   map[backendKey]uint32 // programmed backend -> id
	backendKey map[uint32]backendKey // the inverse
	backendRef map[uint32]int        // slots naming each backend id
	// backendLocal: the programmed backend's entry has BE_F_LOCAL.
	backendLocal map[uint32]bool
	matches      map[bpf.SluiceLb4AffinityMatchKey]bool
	// Left by an agent stopped part-way (or changed behind sluice's
	// back), found when adopting, fixed by the next apply: backends no
	// slot names, reverse-NAT entries no frontend owns, affinity match
	// entries no frontend wants, source ranges of no frontend's
	// reverse-NAT id, and service IPs whose marker entry is missing or
	// superfluous.
	orphanBackends []uint32
	orphanRevNats  []uint32
	orphanMatches  []bpf.SluiceLb4AffinityMatchKey
	orphanRanges   []bpf.SluiceLb4SrcRangeKey
	markersToFix   []netip.Addr
	markers        map[netip.Addr]bool // marker entries present
	ipRefs         map[netip.Addr]int  // ClusterIP frontends per address
	// node is the node part of sluice_config: wanted (nil before the
	// first SetNode: the maps keep what they hold) and as read or last
	// written.
	node       *nodeConfig
	nodeHave   nodeConfig
	nodeFilter uint32 // the address whose prefilter bit node holds, 0 none
	prefilter  prefilter
	backendIDs *idPool
	revNatIDs  *idPool
	// serviceEntries counts entries in lb4_services; capacity its max.
	serviceEntries, serviceCapacity int
	// rangeEntries counts entries in lb4_source_ranges; capacity its max.
	rangeEntries, rangeCapacity int
	// stale is set when an apply failed part-way: the next apply reads
	// the maps again instead of trusting the in-memory copy.
	stale bool
	// justAdopted: the maps were read and nothing applied since, so a
	// full apply need not read them again (the agent's first sync).
	justAdopted bool
	// leftUDP: flows of UDP frontends whose backend left, since the last
	// TakeLeftUDP.
	leftUDP []FlowTarget
	// afterWrite, when set (tests), is called after every map write
	// with the phase's name.
	afterWrite func(phase string)
}

// backendKey identifies a backend in lb4_backends: IPv4 address and port
// as the map holds them (network order), and protocol. Compact, since the
// reconciler keeps one per backend.
type backendKey struct {
	addr  uint32
	port  uint16
	proto Protocol
}

// keyOf is b's identity in lb4_backends; b.Local is a flag of the entry,
// not part of it.
func keyOf(b Backend, p Protocol) backendKey {
	return backendKey{maps.Addr4(b.Addr), maps.Port(b.Port), p}
}

func (k backendKey) backend() Backend {
	return Backend{Addr: maps.AddrFrom4(k.addr), Port: maps.PortFrom(k.port)}
}

// programmed is one frontend as the maps hold it: its scope 0 entries,
// and those of scope 1 in internal.
type programmed struct {
	master    bpf.SluiceLb4Service // the master entry as written
	hasMaster bool
	slots     []uint32  // backend id of slot i+1; 0 where no slot entry exists
	backends  []Backend // what slots[:count] hold, in slot order; zero if unknown
	// internal is the scope 1 set (an eTP=Local frontend's set for this
	// node's own clients), nil when the maps hold no scope 1 entry. Its
	// internal and ranges are unused.
	internal *programmed
	// ranges are the source ranges lb4_source_ranges holds for revNat(),
	// sorted.
	ranges []netip.Prefix
}

func (p *programmed) revNat() uint32 { return p.master.RevNatId }
func (p *programmed) count() int     { return int(p.master.Count) }

// complete reports whether the frontend is fully programmed: a master
// entry, every counted slot naming a known backend, nothing beyond; the
// same for its scope 1 set, if any, under the same reverse-NAT id.
func (p *programmed) complete() bool {
	if !p.setComplete() {
		return false
	}
	return p.internal == nil || (p.internal.setComplete() && p.internal.revNat() == p.revNat())
}

func (p *programmed) setComplete() bool {
	if !p.hasMaster || p.revNat() == 0 || p.count() != len(p.slots) || len(p.backends) != len(p.slots) {
		return false
	}
	return !slices.Contains(p.slots, 0) && !slices.Contains(p.backends, Backend{})
}

// sets calls fn with each set of entries p holds: scope 0, then scope 1.
// Nil-safe.
func (p *programmed) sets(fn func(scope uint8, s *programmed)) {
	if p == nil {
		return
	}
	fn(scopeExternal, p)
	if p.internal != nil {
		fn(scopeInternal, p.internal)
	}
}

// set is p's set of scope; nil when p holds none.
func (p *programmed) set(scope uint8) *programmed {
	if p == nil || scope == scopeExternal {
		return p
	}
	return p.internal
}

// marks reports whether the frontend needs its address marked as a
// service IP: a ClusterIP frontend with a master entry. A NodePort,
// externalIP or load-balancer address is no service IP whose other ports
// are rejected: on a node address that would reject the node's own
// traffic.
func (p *programmed) marks() bool {
	return p != nil && p.hasMaster && FrontendKind(p.master.Kind) == KindClusterIP
}

// affinity reports whether the master asks for session affinity, whose
// match entries the frontend then owns.
func (p *programmed) affinity() bool {
	return p.hasMaster && p.master.Flags&bpf.SluiceLbServiceFlagsSVC_F_AFFINITY != 0
}

const (
	scopeExternal = uint8(bpf.SluiceLbScopeLB_SCOPE_EXTERNAL)
	scopeInternal = uint8(bpf.SluiceLbScopeLB_SCOPE_INTERNAL)
)

// masterOf is the scope 0 master entry a service port needs: every field
// written is derived here (and in internalMasterOf), so comparing two
// masters detects every change.
func masterOf(sp *ServicePort, revNat uint32) bpf.SluiceLb4Service {
	v := setMaster(sp, revNat, len(sp.Backends), sp.DropEmpty, sp.SNATRemote)
	if sp.Internal != nil {
		v.Flags |= bpf.SluiceLbServiceFlagsSVC_F_TWO_SCOPES
	}
	if len(rangesOf(sp)) > 0 {
		v.Flags |= bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES
	}
	return v
}

// internalMasterOf is the scope 1 master entry of a service port with an
// Internal set: its own count and empty and SNAT policy, the frontend's
// reverse-NAT id and affinity. Source ranges are checked on the scope 0
// master, before the scope is chosen.
func internalMasterOf(sp *ServicePort, revNat uint32) bpf.SluiceLb4Service {
	in := sp.Internal
	return setMaster(sp, revNat, len(in.Backends), in.DropEmpty, in.SNATRemote)
}

func setMaster(sp *ServicePort, revNat uint32, count int, dropEmpty, snatRemote bool) bpf.SluiceLb4Service {
	v := bpf.SluiceLb4Service{Count: uint16(count), RevNatId: revNat, Kind: bpf.SluiceLbFrontendKind(sp.Kind)}
	if dropEmpty {
		v.Flags |= bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY
	}
	if snatRemote {
		v.Flags |= bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE
	}
	if sp.AffinityTimeout > 0 {
		v.Flags |= bpf.SluiceLbServiceFlagsSVC_F_AFFINITY
		v.AffinityTimeout = sp.AffinityTimeout
		// The frontend's reverse-NAT id, which its two scopes share
		// (with one set of match entries, the union of theirs): the
		// scope follows from the client's address, which is also the
		// affinity key, so a client never meets the other scope's
		// backends. (Rule 22 shares it across a service port's
		// frontends, which this does not yet.)
		v.AffinityId = revNat
	}
	return v
}

// ApplyStats says what one apply changed.
type ApplyStats struct {
	FrontendsWritten, FrontendsRemoved int
	BackendsAdded, BackendsRemoved     int
}

// ReconcilerOptions are what the reconciler writes besides the State.
type ReconcilerOptions struct {
	// Config is the sluice_config map, whose node fields SetNode has
	// written; nil: SetNode writes nothing.
	Config *maps.Map[uint32, bpf.SluiceDatapathConfig]
	// SNATPorts is the inclusive range of SNAT source ports, written
	// with the node's fields; 0, 0: the datapath's default.
	SNATPorts [2]uint16
}

// NewReconciler adopts whatever the maps already hold.
func NewReconciler(lb maps.LB4, log *slog.Logger) (*Reconciler, error) {
	return NewReconcilerWith(lb, log, ReconcilerOptions{})
}

// NewReconcilerWith is NewReconciler with options.
func NewReconcilerWith(lb maps.LB4, log *slog.Logger, opts ReconcilerOptions) (*Reconciler, error) {
	r := &Reconciler{lb: lb, log: log, opts: opts}
	if err := r.adopt(); err != nil {
		return nil, err
	}
	return r, nil
}

// Frontends returns how many frontends are programmed.
func (r *Reconciler) Frontends() int { return len(r.frontends) }

// Backends returns how many backends are programmed.
func (r *Reconciler) Backends() int { return len(r.backendKey) }

// Apply programs the whole state s, comparing every frontend: the first
// sync, and the periodic full resync, which first reads the maps again so
// that entries changed behind sluice's back are repaired. Services that
// cannot be programmed (a full map) are returned as problems and keep what
// they had; an error means a map write failed and the next apply starts
// from what the maps hold.
func (r *Reconciler) Apply(s *State) (ApplyStats, []Problem, error) {
	if !r.justAdopted {
		r.stale = true
	}
	return r.apply(s, nil, true)
}

// ApplyFrontends programs the frontends in changed as s has them (absent
// from s: removed). The others are neither compared nor written.
func (r *Reconciler) ApplyFrontends(s *State, changed []Frontend) (ApplyStats, []Problem, error) {
	return r.apply(s, changed, false)
}

func (r *Reconciler) apply(s *State, changed []Frontend, full bool) (ApplyStats, []Problem, error) {
	defer func() { r.justAdopted = false }()
	if r.stale {
		if err := r.adopt(); err != nil {
			return ApplyStats{}, nil, err
		}
		if !full {
			// What the maps hold may differ anywhere: compare all.
			return r.apply(s, nil, true)
		}
	}
	var p *plan
	if full {
		p = r.planAll(s)
	} else {
		p = r.planFrontends(s, changed)
	}
	if p.empty() && !r.hasOrphans() {
		return ApplyStats{}, p.problems, nil
	}
	r.stale = true // cleared once every phase succeeded
	if err := r.execute(p); err != nil {
		return p.stats, p.problems, err
	}
	r.stale = false
	return p.stats, p.problems, nil
}

// hasOrphans reports whether the maps hold entries no frontend uses (left
// by an agent stopped part-way), or lack the node's, which an apply must
// fix even when the state is unchanged.
func (r *Reconciler) hasOrphans() bool {
	return len(r.orphanBackends) > 0 || len(r.orphanRevNats) > 0 || len(r.orphanMatches) > 0 ||
		len(r.orphanRanges) > 0 || len(r.markersToFix) > 0 || r.prefilter.dirty() || r.nodeDirty()
}

func (r *Reconciler) wrote(phase string) {
	if r.afterWrite != nil {
		r.afterWrite(phase)
	}
}

// write runs one phase's map write and names the phase in its error.
func (r *Reconciler) write(phase string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", phase, err)
	}
	r.wrote(phase)
	return nil
}

// lbKey is the key of a scope 0 entry of fe.
func lbKey(fe Frontend, slot uint16) bpf.SluiceLb4Key { return scopedKey(fe, scopeExternal, slot) }

func scopedKey(fe Frontend, scope uint8, slot uint16) bpf.SluiceLb4Key {
	return bpf.SluiceLb4Key{
		Address:     maps.Addr4(fe.Addr),
		Dport:       maps.Port(fe.Port),
		Proto:       uint8(fe.Proto),
		BackendSlot: slot,
		Scope:       scope,
	}
}

func markerKey(a netip.Addr) bpf.SluiceLb4Key {
	return bpf.SluiceLb4Key{Address: maps.Addr4(a)}
}

func matchKey(backendID, affinityID uint32) bpf.SluiceLb4AffinityMatchKey {
	return bpf.SluiceLb4AffinityMatchKey{BackendId: backendID, AffinityId: affinityID}
}
