package control

import (
	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// prefilter keeps lb4_prefilter in step with the programmed frontends by
// reference-counting its bits, so a change costs its own bits, not a
// recount of the state. want is the bitmap the state needs; programmed is
// what the map holds. Bits are set before the entries that need them are
// written and cleared after those entries are gone.
type prefilter struct {
	programmed *bpf.SluiceLb4Filter
	want       *bpf.SluiceLb4Filter
	// scratch holds the widened bitmap while it is written; the three
	// buffers are reused, as a change must not cost 512 KiB of garbage.
	scratch *bpf.SluiceLb4Filter
	refs    map[uint32]int32
	// grow: want has bits programmed lacks; shrink: programmed has bits
	// want lacks.
	grow, shrink bool
}

func newPrefilter(programmed *bpf.SluiceLb4Filter) prefilter {
	return prefilter{programmed: programmed, want: &bpf.SluiceLb4Filter{}, scratch: &bpf.SluiceLb4Filter{}, refs: map[uint32]int32{}}
}

func (f *prefilter) dirty() bool { return f.grow || f.shrink }

// settle makes grow and shrink exact. They are set as bits change and
// never cleared by a later change undoing one (a reference dropped and
// taken again, or the node's address set after adopting), so before a
// write, when either is set, the bitmaps are compared: 64 Ki words, much
// cheaper than the 512 KiB write it may save.
func (f *prefilter) settle() {
	if !f.dirty() {
		return
	}
	f.grow, f.shrink = false, false
	for i, w := range f.want.Words {
		p := f.programmed.Words[i]
		if w&^p != 0 {
			f.grow = true
		}
		if p&^w != 0 {
			f.shrink = true
		}
	}
}

func bitSet(m *bpf.SluiceLb4Filter, bit uint32) bool { return m.Words[bit>>6]&(1<<(bit&63)) != 0 }

func (f *prefilter) ref(bit uint32) {
	f.refs[bit]++
	if f.refs[bit] == 1 {
		filterSet(f.want, bit)
		if !bitSet(f.programmed, bit) {
			f.grow = true
		}
	}
}

func (f *prefilter) unref(bit uint32) {
	f.refs[bit]--
	if f.refs[bit] <= 0 {
		delete(f.refs, bit)
		f.want.Words[bit>>6] &^= 1 << (bit & 63)
		if bitSet(f.programmed, bit) {
			f.shrink = true
		}
	}
}

// frontend adds (delta 1) or removes (-1) the bits of one frontend: its
// address, whatever its kind (a NodePort's node address as much as a
// ClusterIP), and every backend of either scope.
func (f *prefilter) frontend(fe Frontend, p *programmed, delta int) {
	apply := f.ref
	if delta < 0 {
		apply = f.unref
	}
	apply(filterDst(maps.Addr4(fe.Addr)))
	p.sets(func(_ uint8, s *programmed) {
		for _, b := range s.backends {
			if b != (Backend{}) {
				apply(filterSrc(maps.Addr4(b.Addr), maps.Port(b.Port), uint8(fe.Proto)))
			}
		}
	})
}

// address adds or removes the destination bit of an address that is no
// frontend's: the node's SNAT address, to which SNATed flows' replies come.
func (f *prefilter) address(addr uint32, delta int) {
	if delta < 0 {
		f.unref(filterDst(addr))
	} else {
		f.ref(filterDst(addr))
	}
}

// widened is what the map must hold while old and new entries coexist:
// programmed | want, in scratch. shrink is updated for what that leaves
// to clear. Once written, widenedWritten makes it the programmed bitmap.
func (f *prefilter) widened() *bpf.SluiceLb4Filter {
	f.shrink = false
	for i, w := range f.want.Words {
		u := f.programmed.Words[i] | w
		f.scratch.Words[i] = u
		if u != w {
			f.shrink = true
		}
	}
	return f.scratch
}

func (f *prefilter) widenedWritten() {
	f.programmed, f.scratch = f.scratch, f.programmed
	f.grow = false
}

// narrowed records that want was written.
func (f *prefilter) narrowed() {
	*f.programmed = *f.want
	f.shrink = false
}
