package node

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// The trim sees a burst's garbage and the free pages it leaves, and a
// trim returns them.
func TestHeapSlack(t *testing.T) {
	runtime.GC()
	free0, objects0, live0 := heapStats()
	if objects0 == 0 || live0 == 0 {
		t.Fatalf("heap objects %d, live %d: are %s and %s runtime metrics?", objects0, live0, heapObjectsMetric, heapLiveMetric)
	}
	base := slack(free0, objects0, live0)
	// No collection during the burst: its garbage stays uncollected.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	burst := make([][]byte, 64)
	for i := range burst {
		burst[i] = make([]byte, 1<<20)
	}
	runtime.KeepAlive(burst)
	burst = nil
	// Garbage, not yet collected.
	if s := slack(heapStats()); s < base+32<<20 {
		t.Errorf("after 64 MiB of garbage the slack is %d bytes (%d before), want 32 MiB more at least", s, base)
	}
	// Collected: free pages.
	runtime.GC()
	free, objects, live := heapStats()
	if free < 16<<20 {
		t.Fatalf("after collecting 64 MiB the heap has %d bytes free, want at least 16 MiB (is %s a runtime metric?)", free, heapFreeMetric)
	}
	before := slack(free, objects, live)
	debug.FreeOSMemory()
	if after := slack(heapStats()); after >= before/2 {
		t.Errorf("slack %d -> %d after a trim, want most of it returned", before, after)
	}
}

func TestTrimSlack(t *testing.T) {
	for _, c := range []struct{ live, want uint64 }{
		{0, 4 << 20},
		{2 << 20, 4 << 20},
		{32 << 20, 4 << 20},
		{64 << 20, 8 << 20},
		{100 << 20, 12800 << 10},
	} {
		if got := trimSlack(c.live); got != c.want {
			t.Errorf("trimSlack(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
	if got := slack(1, 10, 4); got != 7 {
		t.Errorf("slack(free 1, objects 10, live 4) = %d, want 7", got)
	}
	if got := slack(1, 3, 4); got != 1 {
		t.Errorf("slack with fewer objects than the last live heap = %d, want the free pages only", got)
	}
}
