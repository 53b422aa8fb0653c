package node

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// heapFree sees the heap a burst left free, and a trim returns it.
func TestHeapFree(t *testing.T) {
	burst := make([][]byte, 64)
	for i := range burst {
		burst[i] = make([]byte, 1<<20)
	}
	runtime.KeepAlive(burst)
	burst = nil
	runtime.GC()
	before := heapFree()
	if before < 16<<20 {
		t.Fatalf("after freeing 64 MiB the heap has %d bytes free, want at least 16 MiB (is %s a runtime metric?)", before, heapFreeMetric)
	}
	debug.FreeOSMemory()
	if after := heapFree(); after >= before/2 {
		t.Errorf("free heap %d -> %d after a trim, want most of it returned", before, after)
	}
}
