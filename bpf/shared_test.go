package bpf_test

import (
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
)

// The datapath of the default sizes is loaded once per test binary and
// its maps emptied for each world: loading verifies the programs, which
// costs far more than any test (seconds under the kernel matrix's
// emulation), and a world's programs hold no state outside their maps.
var shared struct {
	sync.Mutex
	objs *bpf.SluiceObjects
	busy bool
}

// sharedObjects returns the shared datapath with every map empty, held by
// t until it ends (worlds do not overlap: the suite runs no test in
// parallel; one that did would get a datapath of its own).
func sharedObjects(t testing.TB, load func(*bpf.SluiceObjects)) *bpf.SluiceObjects {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.busy {
		objs := &bpf.SluiceObjects{}
		load(objs)
		t.Cleanup(func() { objs.Close() })
		return objs
	}
	if shared.objs == nil {
		shared.objs = &bpf.SluiceObjects{}
		load(shared.objs)
	}
	if err := emptyMaps(&shared.objs.SluiceMaps); err != nil {
		t.Fatalf("empty the shared datapath's maps: %v", err)
	}
	shared.busy = true
	t.Cleanup(func() {
		shared.Lock()
		shared.busy = false
		shared.Unlock()
	})
	return shared.objs
}

// emptyMaps puts every map back as it was created: hash-like maps without
// entries, arrays all zero.
func emptyMaps(m *bpf.SluiceMaps) error {
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		mp, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || mp == nil {
			continue
		}
		if err := emptyMap(mp); err != nil {
			return err
		}
	}
	return nil
}

func emptyMap(m *ebpf.Map) error {
	switch m.Type() {
	case ebpf.Array, ebpf.PerCPUArray:
		n := int(m.MaxEntries())
		zero := make([]byte, m.ValueSize())
		if m.Type() == ebpf.PerCPUArray {
			cpus, err := ebpf.PossibleCPU()
			if err != nil {
				return err
			}
			vals := make([][]byte, cpus)
			for c := range vals {
				vals[c] = zero
			}
			for k := range uint32(n) {
				if err := m.Put(k, vals); err != nil {
					return err
				}
			}
			return nil
		}
		keys := make([]uint32, n)
		// n zero values of the map's value size, as one fixed-size slice.
		vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(m.ValueSize()), reflect.TypeOf(byte(0)))), n, n).Interface()
		for k := range keys {
			keys[k] = uint32(k)
		}
		if _, err := m.BatchUpdate(keys, vals, nil); err == nil {
			return nil
		} else if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		for k := range keys {
			if err := m.Put(uint32(k), zero); err != nil {
				return err
			}
		}
		return nil
	default:
		var keys [][]byte
		key := make([]byte, m.KeySize())
		it := m.Iterate()
		var val []byte
		for it.Next(&key, &val) {
			keys = append(keys, append([]byte(nil), key...))
		}
		if err := it.Err(); err != nil {
			return err
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
		}
		return nil
	}
}
