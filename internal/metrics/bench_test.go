package metrics

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	sluicemaps "github.com/sluice-lb/sluice/maps"
)

// Scale of BenchmarkScrape: a conntrack table near its default capacity
// (262144) and the control-plane benchmark's 10k services of 10 endpoints.
const (
	benchCT4      = 250_000
	benchServices = 10_000
	benchBackends = 10
)

// putFromEveryCPU inserts n entries into ct4, an equal share from each CPU
// the process may run on. ct4 has per-CPU LRU lists (BPF_F_NO_COMMON_LRU),
// so entries inserted from one CPU can fill only that CPU's share of the
// table, as with the datapath, whose flows arrive on every CPU.
func putFromEveryCPU(tb testing.TB, ct *sluicemaps.Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry], n int) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		tb.Fatal(err)
	}
	var cpus []int
	for c := 0; c < len(allowed)*64 && len(cpus) < allowed.Count(); c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	errs := make(chan error, len(cpus))
	for i, cpu := range cpus {
		lo, hi := n*i/len(cpus), n*(i+1)/len(cpus)
		go func() {
			// The thread is not unlocked: it exits with the goroutine,
			// taking its changed affinity with it.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			keys := make([]bpf.SluiceCt4Key, 0, hi-lo)
			for j := lo; j < hi; j++ {
				keys = append(keys, ct4Key(j))
			}
			errs <- ct.PutAll(keys, make([]bpf.SluiceCt4Entry, len(keys)))
		}()
	}
	for range cpus {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
}

func fillForBench(b *testing.B) *sluicemaps.Datapath {
	dp, _ := newDatapath(b, nil)
	putFromEveryCPU(b, dp.CT4, benchCT4)

	var (
		svcKeys []bpf.SluiceLb4Key
		svcVals []bpf.SluiceLb4Service
		beIDs   []uint32
		beVals  []bpf.SluiceLb4Backend
		rnIDs   []uint32
		rnVals  []bpf.SluiceLb4ReverseNat
	)
	for s := range benchServices {
		vip := 0x0a600000 + uint32(s)
		svcKeys = append(svcKeys, bpf.SluiceLb4Key{Address: vip})
		svcVals = append(svcVals, bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER})
		svcKeys = append(svcKeys, bpf.SluiceLb4Key{Address: vip, Dport: 80, Proto: 6})
		svcVals = append(svcVals, bpf.SluiceLb4Service{RevNatId: uint32(s + 1), Count: benchBackends})
		rnIDs = append(rnIDs, uint32(s+1))
		rnVals = append(rnVals, bpf.SluiceLb4ReverseNat{Address: vip, Port: 80})
		for e := range benchBackends {
			id := uint32(s*benchBackends + e + 1)
			svcKeys = append(svcKeys, bpf.SluiceLb4Key{Address: vip, Dport: 80, Proto: 6, BackendSlot: uint16(e + 1)})
			svcVals = append(svcVals, bpf.SluiceLb4Service{BackendId: id})
			beIDs = append(beIDs, id)
			beVals = append(beVals, bpf.SluiceLb4Backend{Address: 0x0af40000 + id, Port: 8080, Proto: 6,
				Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE})
		}
	}
	for _, err := range []error{
		dp.LB4.Services.PutAll(svcKeys, svcVals),
		dp.LB4.Backends.PutAll(beIDs, beVals),
		dp.LB4.RevNat.PutAll(rnIDs, rnVals),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	n, err := hashFill("ct4_v3", dp.CT4).count()
	if err != nil {
		b.Fatal(err)
	}
	if n < benchCT4*99/100 {
		b.Fatalf("ct4 holds %d entries after inserting %d", n, benchCT4)
	}
	b.Logf("ct4 %d entries, lb4_services %d, lb4_backends %d, lb4_revnat %d, batched %v",
		n, len(svcKeys), len(beIDs), len(rnIDs), dp.CT4.Batched())
	return dp
}

// BenchmarkScrape is the cost of one scrape of the datapath collector
// (every counter and every map's fill) at the scale above, and of its
// parts; ct4/nextkey is the key-only iteration it does not use, for
// comparison.
//
//	go test -run '^$' -bench Scrape -benchtime 20x ./internal/metrics/
func BenchmarkScrape(b *testing.B) {
	b.Run("empty", func(b *testing.B) {
		dp, _ := newDatapath(b, nil)
		benchCollect(b, NewDatapathCollector(dp))
	})
	dp := fillForBench(b)
	b.Run("collect", func(b *testing.B) { benchCollect(b, NewDatapathCollector(dp)) })
	for _, f := range fillMaps(dp) {
		if f.count == nil {
			continue
		}
		b.Run(f.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := f.count(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What counting the arrays' slots would add (fillMaps does not).
	b.Run("lb4_backends/slots", func(b *testing.B) {
		for b.Loop() {
			if n, err := countSlots(dp.LB4.Backends); err != nil || n != benchServices*benchBackends {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("lb4_revnat/slots", func(b *testing.B) {
		for b.Loop() {
			if n, err := countSlots(dp.LB4.RevNat); err != nil || n != benchServices {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("counters", func(b *testing.B) {
		for b.Loop() {
			if _, err := dp.ReadCounters(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ct4/nextkey", func(b *testing.B) {
		m := dp.CT4.Raw()
		for b.Loop() {
			if n := countNextKey(b, m); n < benchCT4*99/100 {
				b.Fatalf("%d keys", n)
			}
		}
	})
}

func benchCollect(b *testing.B, c prometheus.Collector) {
	for b.Loop() {
		ch := make(chan prometheus.Metric, 64)
		done := make(chan struct{})
		go func() {
			for range ch {
			}
			close(done)
		}()
		c.Collect(ch)
		close(ch)
		<-done
	}
}

// countSlots counts the slots of an id-indexed array whose value is not
// the zero value (the reconciler zeroes a slot it frees).
func countSlots[V comparable](m *sluicemaps.Map[uint32, V]) (int, error) {
	var zero V
	n := 0
	err := m.Each(func(id uint32, v V) bool {
		if id != 0 && v != zero {
			n++
		}
		return true
	})
	return n, err
}

// countNextKey counts m's keys one BPF_MAP_GET_NEXT_KEY syscall at a time.
func countNextKey(b *testing.B, m *ebpf.Map) int {
	var key, next bpf.SluiceCt4Key
	n := 0
	err := m.NextKey(nil, &next)
	for ; err == nil; err = m.NextKey(&key, &next) {
		key = next
		n++
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		b.Fatal(fmt.Errorf("next key: %w", err))
	}
	return n
}
