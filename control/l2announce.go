package control

import (
	"bytes"
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// L2Entry is one load-balancer address this node answers ARP requests for
// on one device (l2_announce4), with the MAC it answers with: the
// device's own.
type L2Entry struct {
	Ifindex int
	Addr    netip.Addr
	MAC     net.HardwareAddr
}

func (e L2Entry) key() bpf.SluiceL2Announce4Key {
	return bpf.SluiceL2Announce4Key{Ifindex: uint32(e.Ifindex), Addr: maps.Addr4(e.Addr)}
}

func (e L2Entry) value() bpf.SluiceL2Announce4 {
	var v bpf.SluiceL2Announce4
	copy(v.Mac[:], e.MAC)
	return v
}

// L2AnnounceMap is l2_announce4 as the control plane sees it.
type L2AnnounceMap = maps.Map[bpf.SluiceL2Announce4Key, bpf.SluiceL2Announce4]

// L2Reconciler programs the addresses this node announces into
// l2_announce4. It keeps no copy: every Apply reads the map, so an entry
// removed or changed behind sluice's back (or left by an earlier agent
// whose announcements moved away meanwhile) is repaired by the next one.
type L2Reconciler struct {
	m   *L2AnnounceMap
	log *slog.Logger
}

// NewL2Reconciler programs m; a nil log logs to slog.Default().
func NewL2Reconciler(m *L2AnnounceMap, log *slog.Logger) *L2Reconciler {
	if log == nil {
		log = slog.Default()
	}
	return &L2Reconciler{m: m, log: log}
}

// ReadL2 returns what m holds, by device and address.
func ReadL2(m *L2AnnounceMap) ([]L2Entry, error) {
	var out []L2Entry
	err := m.Each(func(k bpf.SluiceL2Announce4Key, v bpf.SluiceL2Announce4) bool {
		out = append(out, L2Entry{Ifindex: int(k.Ifindex), Addr: maps.AddrFrom4(k.Addr), MAC: bytes.Clone(v.Mac[:])})
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read l2_announce4: %w", err)
	}
	slices.SortFunc(out, func(a, b L2Entry) int {
		return cmp.Or(cmp.Compare(a.Ifindex, b.Ifindex), a.Addr.Compare(b.Addr))
	})
	return out, nil
}

// Apply makes l2_announce4 hold exactly want: new entries are written
// first, then those no longer wanted removed. It returns the entries that
// were absent before, the addresses this node has just taken over, whose
// neighbours' caches gratuitous ARP should move.
func (r *L2Reconciler) Apply(want []L2Entry) (added []L2Entry, err error) {
	have := map[bpf.SluiceL2Announce4Key]bpf.SluiceL2Announce4{}
	err = r.m.Each(func(k bpf.SluiceL2Announce4Key, v bpf.SluiceL2Announce4) bool {
		have[k] = v
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read l2_announce4: %w", err)
	}
	wanted := map[bpf.SluiceL2Announce4Key]bool{}
	for _, e := range want {
		if !e.Addr.Is4() {
			continue
		}
		k, v := e.key(), e.value()
		wanted[k] = true
		old, ok := have[k]
		if ok && old == v {
			continue
		}
		if err := r.m.Put(k, v); err != nil {
			return added, fmt.Errorf("announce %s on ifindex %d: %w", e.Addr, e.Ifindex, err)
		}
		if ok {
			r.log.Info("l2 announcement repaired", "addr", e.Addr, "ifindex", e.Ifindex, "mac", e.MAC.String())
		} else {
			added = append(added, e)
		}
	}
	for k := range have {
		if wanted[k] {
			continue
		}
		if err := r.m.Delete(k); err != nil {
			return added, fmt.Errorf("withdraw %s on ifindex %d: %w", maps.AddrFrom4(k.Addr), k.Ifindex, err)
		}
		r.log.Info("l2 announcement withdrawn", "addr", maps.AddrFrom4(k.Addr), "ifindex", k.Ifindex)
	}
	for _, e := range added {
		r.log.Info("l2 announcement taken", "addr", e.Addr, "ifindex", e.Ifindex, "mac", e.MAC.String())
	}
	return added, nil
}
