package maps

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The element-wise fallback of kernels without batch operations gives the
// same result as a batch.
func TestPutAllDeleteAllEachWithAndWithoutBatch(t *testing.T) {
	testenv.Privileged(t)
	for _, batch := range []bool{true, false} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 10000})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		w := New[uint32, uint64](m)
		w.noBatch.Store(!batch)
		var keys []uint32
		var vals []uint64
		for i := range uint32(5000) {
			keys = append(keys, i)
			vals = append(vals, uint64(i)*3)
		}
		if err := w.PutAll(keys, vals); err != nil {
			t.Fatalf("batch=%v: %v", batch, err)
		}
		n := 0
		if err := w.Each(func(k uint32, v uint64) bool {
			if v != uint64(k)*3 {
				t.Errorf("batch=%v: %d = %d", batch, k, v)
			}
			n++
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if n != 5000 {
			t.Errorf("batch=%v: Each saw %d entries, want 5000", batch, n)
		}
		// Deleting keys of which some are already gone is not an error.
		if err := w.DeleteAll(append(keys[:2500], 99999)); err != nil {
			t.Fatalf("batch=%v: delete: %v", batch, err)
		}
		if _, err := w.Lookup(10); err == nil {
			t.Errorf("batch=%v: key 10 survived", batch)
		}
		if v, err := w.Lookup(4000); err != nil || v != 12000 {
			t.Errorf("batch=%v: key 4000 = %d, %v", batch, v, err)
		}
		if w.Batched() != batch {
			t.Errorf("batch=%v: Batched() = %v", batch, w.Batched())
		}
	}
}
