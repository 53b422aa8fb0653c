package node

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/netloom/netloom/systemd"
)

// Trimming the heap. The resident memory of a Go process is its heap at
// the top of a collection cycle, not what is live: between collections
// the heap fills with garbage up to the next goal (GOGC=50: half the live
// heap again), and pages a burst left free (thousands of objects applied
// at once) go back to the kernel only slowly. An agent at rest still
// makes a little garbage (gossip packets, periodic passes), so it sits at
// the top of the cycle. Every trimEvery the agent looks at its slack (the
// free pages not yet returned plus the garbage since the last
// collection); when that is more than trimSlack(live) it collects and
// returns the free pages at once (debug.FreeOSMemory). At rest that is a
// collection every few tens of seconds, which the garbage would cause
// soon anyway, and the resident memory stays near what is live.
const trimEvery = 10 * time.Second

// trimSlack is the slack tolerated over a live heap of live bytes: an
// eighth of it, at least 4 MiB (a small heap is not worth a collection).
// At rest an agent makes about 0.3 MB/s of garbage, so with 40 MB live
// that is a collection every 20 s or so, each a few tens of milliseconds
// of CPU.
func trimSlack(live uint64) uint64 { return max(4<<20, live/8) }

// The runtime metrics the trim reads.
const (
	// heapFreeMetric is memory of the heap that is free and could be
	// returned to the kernel but has not been.
	heapFreeMetric = "/memory/classes/heap/free:bytes"
	// heapObjectsMetric is the heap's objects, live or garbage not yet
	// swept.
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
	// heapLiveMetric is the heap the last collection marked live.
	heapLiveMetric = "/gc/heap/live:bytes"
)

// heapStats reads the free heap, the heap's objects and the live heap.
func heapStats() (free, objects, live uint64) {
	s := []metrics.Sample{{Name: heapFreeMetric}, {Name: heapObjectsMetric}, {Name: heapLiveMetric}}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return v(0), v(1), v(2)
}

// slack is the heap the agent holds beyond what is live: free pages not
// returned and garbage not yet collected.
func slack(free, objects, live uint64) uint64 {
	garbage := uint64(0)
	if objects > live {
		garbage = objects - live
	}
	return free + garbage
}

// runTrim trims the heap every trimEvery while ctx lives.
func (a *Agent) runTrim(ctx context.Context) error {
	return every(ctx, trimEvery, func() {
		free, objects, live := heapStats()
		if s := slack(free, objects, live); s > trimSlack(live) {
			debug.FreeOSMemory()
			a.log.Debug("returned free heap to the kernel", "slackMiB", s>>20, "liveMiB", live>>20)
		}
	})
}

// Start-up pages (systemd.ReleaseStartupPages). Start-up is over when the
// node is ready and, in Kubernetes mode, once the API caches have synced
// and the rooms have had startupSettle for their first passes over them:
// there the API scheme is built on first contact and the first lists are
// decoded and compiled, often after the node is ready.
const startupSettle = 30 * time.Second

// runStartupPages releases the binary's start-up pages when the node is
// ready, and in Kubernetes mode once more when the start-up above is over.
func (a *Agent) runStartupPages(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	wait := func(done func() bool) bool {
		for !done() {
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
			}
		}
		return true
	}
	if !wait(a.ready.Load) {
		return nil
	}
	systemd.ReleaseStartupPagesLogged(a.log)
	if a.kube == nil || !wait(func() bool { return a.kube.Status().Synced }) {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(startupSettle):
	}
	systemd.ReleaseStartupPagesLogged(a.log)
	return nil
}
