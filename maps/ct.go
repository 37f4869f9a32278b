package maps

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
)

// CT4 is the conntrack table ct4_v3 (bpf/lib/conntrack.h): one entry per
// direction of a translated flow, the forward one keyed by the client's
// tuple to the frontend, the reply one by the backend's tuple to the
// client. The helpers below are what readers of the table share (the
// agent's collector, the CLI): how an entry finds its partner, when an
// entry has expired, how to walk the table in bounded memory.
type CT4 = Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry]

// CT4Flows is how many flows a table of entries entries holds: every flow
// takes two.
func CT4Flows(entries uint32) uint32 { return entries / 2 }

// CT4ReplyKey is the key of the reply entry of the flow whose forward
// entry is fe under key fk: the backend's tuple back to the client
// (ct4_reply_key in conntrack.h).
func CT4ReplyKey(fk bpf.SluiceCt4Key, fe bpf.SluiceCt4Entry) bpf.SluiceCt4Key {
	k := bpf.SluiceCt4Key{
		Saddr: fe.BackendAddr, Daddr: fk.Saddr,
		Sport: fe.BackendPort, Dport: fk.Sport,
		Proto: fk.Proto,
	}
	if CT4SNAT(fe) { // replies come to the node's address and port
		k.Daddr, k.Dport = fe.NatAddr, fe.NatPort
	}
	return k
}

// CT4SNAT reports whether an entry's flow is SNATed (CT_F_SNAT).
func CT4SNAT(e bpf.SluiceCt4Entry) bool { return e.Flags&bpf.SluiceCtFlagsCT_F_SNAT != 0 }

// CT4ForwardKey is the key of the forward entry of the flow whose reply
// entry re is keyed rk, given the flow's frontend (lb4_revnat[rev_nat_id]):
// the client's tuple to the frontend (lb4_forward_of_reply in lb4.h). A
// SNATed flow's client is in its reply entry.
func CT4ForwardKey(rk bpf.SluiceCt4Key, re bpf.SluiceCt4Entry, frontend bpf.SluiceLb4ReverseNat) bpf.SluiceCt4Key {
	k := bpf.SluiceCt4Key{
		Saddr: rk.Daddr, Daddr: frontend.Address,
		Sport: rk.Dport, Dport: frontend.Port,
		Proto: rk.Proto,
	}
	if CT4SNAT(re) {
		k.Saddr, k.Sport = re.NatAddr, re.NatPort
	}
	return k
}

// CT4Partners reports whether fe is the forward entry of the flow of the
// reply entry keyed rk: a forward entry translating to the very backend
// the reply comes from. A forward entry on the same client tuple that
// points at another backend belongs to another flow.
func CT4Partners(fe bpf.SluiceCt4Entry, rk bpf.SluiceCt4Key) bool {
	return fe.Kind == bpf.SluiceCtKindCT_FORWARD && fe.BackendAddr == rk.Saddr && fe.BackendPort == rk.Sport
}

// CT4Expired reports whether an entry's direction is idle at now (seconds
// of CLOCK_MONOTONIC, MonotonicSeconds): the datapath keeps an entry live
// while expires >= now.
func CT4Expired(e bpf.SluiceCt4Entry, now uint32) bool { return e.Expires < now }

// MonotonicSeconds is the datapath's conntrack clock: CLOCK_MONOTONIC in
// whole seconds, as bpf_ktime_get_ns()/1e9.
func MonotonicSeconds() (uint32, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return uint32(ts.Sec), nil
}

// DeleteCT4Pair removes both entries of a flow; either may be missing
// already (the datapath or another sweep took it).
func DeleteCT4Pair(m *CT4, a, b bpf.SluiceCt4Key) error {
	if err := m.Delete(a); err != nil {
		return err
	}
	return m.Delete(b)
}

// WalkCT4 calls fn with the table's entries, at most chunk at a time, in
// buffers it reuses: memory stays at chunk entries whatever the table's
// size. fn may delete entries (those it was handed and others); it may not
// keep the slices. The walk uses batch lookups (5.6+), whose cursor is a
// hash bucket, so deleting entries of buckets already read disturbs
// nothing; where the kernel has none it steps with BPF_MAP_GET_NEXT_KEY,
// fetching the key after each chunk before fn runs. An entry created or
// deleted during the walk may be seen or not; none is seen twice by a
// batch walk.
func WalkCT4(m *CT4, chunk int, fn func(keys []bpf.SluiceCt4Key, vals []bpf.SluiceCt4Entry) error) error {
	if chunk <= 0 {
		chunk = eachChunk
	}
	keys := make([]bpf.SluiceCt4Key, chunk)
	vals := make([]bpf.SluiceCt4Entry, chunk)
	if m.Batched() {
		err := walkBatch(m.m, keys, vals, fn)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		m.noBatch.Store(true)
	}
	return walkNextKey(m.m, keys, vals, fn)
}

func walkBatch(m *ebpf.Map, keys []bpf.SluiceCt4Key, vals []bpf.SluiceCt4Entry,
	fn func([]bpf.SluiceCt4Key, []bpf.SluiceCt4Entry) error) error {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		done := errors.Is(err, ebpf.ErrKeyNotExist)
		if err != nil && !done {
			return err
		}
		if n > 0 {
			if err := fn(keys[:n], vals[:n]); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
}

// walkNextKey is the walk of kernels without batch lookups. The key after
// a chunk is fetched before fn runs, so fn deleting the chunk's last key
// loses nothing. A key deleted otherwise under the walk makes the kernel
// start over from the first key, so the walk stops after as many steps as
// the table has room for: entries may then be seen twice, never forever.
func walkNextKey(m *ebpf.Map, keys []bpf.SluiceCt4Key, vals []bpf.SluiceCt4Entry,
	fn func([]bpf.SluiceCt4Key, []bpf.SluiceCt4Entry) error) error {
	budget := 2 * int(m.MaxEntries())
	var next bpf.SluiceCt4Key
	err := m.NextKey(nil, &next)
	for budget > 0 {
		n := 0
		for ; n < len(keys) && err == nil && budget > 0; budget-- {
			k := next
			err = m.NextKey(&k, &next)
			lerr := m.Lookup(&k, &vals[n])
			if errors.Is(lerr, ebpf.ErrKeyNotExist) {
				continue // deleted meanwhile
			}
			if lerr != nil {
				return lerr
			}
			keys[n] = k
			n++
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		if n > 0 {
			if ferr := fn(keys[:n], vals[:n]); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return nil // no key after the last
		}
	}
	return nil
}

// MemoryBytes is what the kernel charges for a map (memlock in its
// fdinfo): for a preallocated hash, every element, the buckets and the
// per-CPU spares, whether used or not.
func MemoryBytes(m *ebpf.Map) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no memlock in fdinfo of %s", m)
}
