package maps

import (
	"github.com/cilium/ebpf"
)

// PerCPU is a per-CPU array keyed by K whose values are summed by the caller.
type PerCPU[K comparable, V any] struct {
	m *ebpf.Map
}

// NewPerCPU wraps m, a BPF_MAP_TYPE_PERCPU_ARRAY or PERCPU_HASH.
func NewPerCPU[K comparable, V any](m *ebpf.Map) *PerCPU[K, V] {
	return &PerCPU[K, V]{m: m}
}

// Lookup returns one value per possible CPU.
func (p *PerCPU[K, V]) Lookup(k K) ([]V, error) {
	var vs []V
	err := p.m.Lookup(&k, &vs)
	return vs, err
}
