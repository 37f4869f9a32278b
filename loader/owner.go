package loader

import (
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
)

// owner recognises the programs one agent (one pin dir) runs, so that
// detaching and uninstalling remove those and never another program that
// happens to sit at the same tc priority and handle. A program is ours if
// it is one this pin dir pinned (now or before this agent replaced the
// pins), or if it uses one of the maps pinned there: an older agent's
// program whose pin was replaced still reads and writes the adopted maps.
type owner struct {
	progs map[ebpf.ProgramID]bool
	maps  map[ebpf.MapID]bool
}

func newOwner() *owner {
	return &owner{progs: map[ebpf.ProgramID]bool{}, maps: map[ebpf.MapID]bool{}}
}

func (o *owner) addProgram(p *ebpf.Program) {
	if info, err := p.Info(); err == nil {
		if id, ok := info.ID(); ok {
			o.progs[id] = true
		}
	}
}

func (o *owner) addMap(m *ebpf.Map) {
	if info, err := m.Info(); err == nil {
		if id, ok := info.ID(); ok {
			o.maps[id] = true
		}
	}
}

// pinnedOwner is the owner of what is pinned under pinDir: its programs
// and every map of the datapath's object pinned there.
func pinnedOwner(pinDir string) *owner {
	o := newOwner()
	for _, name := range []string{bpf.SluiceProgSluiceIngress, bpf.SluiceProgSluiceEgress} {
		if p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, name), nil); err == nil {
			o.addProgram(p)
			p.Close()
		}
	}
	spec, err := bpf.LoadSluice()
	if err != nil {
		return o
	}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			continue
		}
		o.addMap(m)
		m.Close()
	}
	return o
}

// owns reports whether the program with that id is ours. A program that
// cannot be opened (gone, or id 0 of a filter listing's header) is not.
func (o *owner) owns(id ebpf.ProgramID) bool {
	if id == 0 {
		return false
	}
	if o.progs[id] {
		return true
	}
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return false
	}
	ids, _ := info.MapIDs()
	for _, m := range ids {
		if o.maps[m] {
			return true
		}
	}
	return false
}

// pinnedProgramIDs returns the ids of the programs pinned under pinDir,
// read before a load replaces the pins.
func pinnedProgramIDs(pinDir string) []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, name := range []string{bpf.SluiceProgSluiceIngress, bpf.SluiceProgSluiceEgress} {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, name), nil)
		if err != nil {
			continue // none pinned yet
		}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
		p.Close()
	}
	return ids
}
