// Package maps wraps the datapath's BPF maps in typed Go values built on the
// types bpf2go generates from bpf/lib/types.h.
package maps

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"
)

// Map is a BPF map whose keys and values are the generated Go types K and V.
type Map[K comparable, V any] struct {
	m *ebpf.Map
	// noBatch is set once the kernel has refused a batch operation on this
	// map, after which element-wise calls are used.
	noBatch atomic.Bool
}

// New wraps m. The caller keeps ownership of m.
func New[K comparable, V any](m *ebpf.Map) *Map[K, V] {
	return &Map[K, V]{m: m}
}

// Raw returns the underlying map.
func (m *Map[K, V]) Raw() *ebpf.Map { return m.m }

// Lookup returns the value for k; ErrKeyNotExist (errors.Is) when absent.
func (m *Map[K, V]) Lookup(k K) (V, error) {
	var v V
	err := m.m.Lookup(&k, &v)
	return v, err
}

// Put creates or replaces k.
func (m *Map[K, V]) Put(k K, v V) error {
	return m.m.Put(&k, &v)
}

// PutRef is Put for a large value: v is written from where it is, not
// copied (the prefilter's 512 KiB would otherwise be allocated anew on
// every write).
func (m *Map[K, V]) PutRef(k K, v *V) error {
	return m.m.Put(&k, v)
}

// Delete removes k; a missing key is not an error.
func (m *Map[K, V]) Delete(k K) error {
	if err := m.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// PutAll creates or replaces every keys[i] with vals[i], in one batch
// syscall per chunk where the kernel supports it (5.6+) and one syscall
// per element where it does not.
func (m *Map[K, V]) PutAll(keys []K, vals []V) error {
	if len(keys) != len(vals) {
		return fmt.Errorf("put %s: %d keys, %d values", m.m, len(keys), len(vals))
	}
	if len(keys) == 0 {
		return nil
	}
	if !m.noBatch.Load() {
		_, err := m.m.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("batch update %s: %w", m.m, err)
		}
		m.noBatch.Store(true)
	}
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return fmt.Errorf("update %s: %w", m.m, err)
		}
	}
	return nil
}

// DeleteAll removes every key; missing keys are not an error.
func (m *Map[K, V]) DeleteAll(keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if !m.noBatch.Load() && m.m.Type() != ebpf.Array {
		_, err := m.m.BatchDelete(keys, nil)
		if err == nil {
			return nil
		}
		// A batch stops at the first missing key; finish element-wise.
		if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("batch delete %s: %w", m.m, err)
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			m.noBatch.Store(true)
		}
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			return fmt.Errorf("delete %s: %w", m.m, err)
		}
	}
	return nil
}

// eachChunk is how many entries one batch lookup returns.
const eachChunk = 4096

// Each calls fn for every entry until fn returns false. It reads the map in
// batches of eachChunk where the kernel supports it (an array of 256k
// entries is then 64 syscalls, not half a million).
func (m *Map[K, V]) Each(fn func(K, V) bool) error {
	if !m.noBatch.Load() {
		err := m.eachBatch(fn)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		m.noBatch.Store(true)
	}
	var (
		k K
		v V
	)
	it := m.m.Iterate()
	for it.Next(&k, &v) {
		if !fn(k, v) {
			return nil
		}
	}
	return it.Err()
}

func (m *Map[K, V]) eachBatch(fn func(K, V) bool) error {
	var cursor ebpf.MapBatchCursor
	keys := make([]K, eachChunk)
	vals := make([]V, eachChunk)
	for {
		n, err := m.m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(keys[i], vals[i]) {
				return nil
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Batched reports whether batch operations are in use (none has failed
// as unsupported yet).
func (m *Map[K, V]) Batched() bool { return !m.noBatch.Load() }
