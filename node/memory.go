package node

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Trimming the heap: a pass over thousands of objects (a burst of applies,
// a controller manager writing thousands of EndpointSlices) grows the heap
// far past what stays live, and Go returns the free pages to the kernel
// only slowly; the resident memory keeps the peak for minutes. Every
// trimEvery, when more than trimFree bytes of the heap are free and not
// yet returned, the agent returns them at once (a collection, then
// madvise). An agent at rest has little free heap and never trims.
const (
	trimEvery = 10 * time.Second
	trimFree  = 32 << 20
)

// heapFreeMetric is memory of the heap that is free and could be returned
// to the kernel but has not been.
const heapFreeMetric = "/memory/classes/heap/free:bytes"

// heapFree reads heapFreeMetric.
func heapFree() uint64 {
	s := []metrics.Sample{{Name: heapFreeMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// runTrim trims the heap every trimEvery while ctx lives.
func (a *Agent) runTrim(ctx context.Context) error {
	return every(ctx, trimEvery, func() {
		if free := heapFree(); free > trimFree {
			debug.FreeOSMemory()
			a.log.Debug("returned free heap to the kernel", "freeMiB", free>>20)
		}
	})
}
