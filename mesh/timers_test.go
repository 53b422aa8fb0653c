package mesh

import (
	"math"
	"testing"
	"time"
)

// suspicionStart is the suspicion timeout memberlist (v0.7 state.go
// suspectNode, suspicion.go newSuspicion) starts for a member of an
// n-node cluster before any other member confirms the suspicion: the
// minimum when no confirmation is expected (k < 1, or fewer other members
// than k), else SuspicionMaxTimeoutMult (6, memberlist's default, which
// the agent keeps) times it.
func suspicionStart(t Timers, n int) time.Duration {
	k := t.SuspicionMult - 2
	if n-2 < k {
		k = 0
	}
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	min := time.Duration(float64(t.SuspicionMult) * scale * float64(t.ProbeInterval))
	if k < 1 {
		return min
	}
	return 6 * min
}

// TestDefaultTimers: the defaults are ones memberlist can run, keep the
// suspicion window the CPU-load soak was run with, and in a 3-node cluster
// (the demo, and the failover benchmark) the suspicion timeout is that
// window from the start, not six times it while waiting for confirmations
// a 3-node cluster cannot give.
func TestDefaultTimers(t *testing.T) {
	d := DefaultTimers()
	if d.ProbeTimeout <= 0 || d.ProbeTimeout >= d.ProbeInterval {
		t.Errorf("probe timeout %s must be positive and below the probe interval %s (the rest of the interval is for indirect and TCP probes)", d.ProbeTimeout, d.ProbeInterval)
	}
	if d.GossipInterval > d.ProbeInterval*2 {
		t.Errorf("gossip interval %s: a suspicion must reach the suspect (to refute) well within the suspicion window", d.GossipInterval)
	}
	if w := time.Duration(d.SuspicionMult) * d.ProbeInterval; w < 400*time.Millisecond {
		t.Errorf("suspicion window %s is below the 400ms the soak (bench/failover -only soak) showed free of false failures", w)
	}
	if got, want := suspicionStart(d, 3), time.Duration(d.SuspicionMult)*d.ProbeInterval; got != want {
		t.Errorf("3 nodes: suspicion timeout starts at %s, want %s", got, want)
	}
	if d.PushPullInterval <= 0 {
		t.Error("push/pull must stay on: it repairs what gossip lost")
	}
	m := New(Config{Name: "n1"})
	if m.cfg.Timers != d {
		t.Errorf("New with zero Timers uses %+v, want the defaults %+v", m.cfg.Timers, d)
	}
}

// TestSuspicionStart pins the model of memberlist's rule used above.
func TestSuspicionStart(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		t    Timers
		n    int
		want time.Duration
	}{
		{Timers{ProbeInterval: 100 * ms, SuspicionMult: 4}, 3, 400 * ms},  // k=2 > 1 other member: no confirmation expected
		{Timers{ProbeInterval: 100 * ms, SuspicionMult: 4}, 5, 2400 * ms}, // k=2 confirmations expected: starts at 6x
		{Timers{ProbeInterval: 200 * ms, SuspicionMult: 2}, 50, 680 * ms}, // k=0; log10(50) scale
		{Timers{ProbeInterval: 200 * ms, SuspicionMult: 3}, 3, 3600 * ms}, // k=1, one other member can confirm
		{Timers{ProbeInterval: time.Second, SuspicionMult: 4}, 3, 4 * time.Second},
	} {
		got := suspicionStart(c.t, c.n)
		if diff := got - c.want; diff < -ms || diff > ms {
			t.Errorf("%+v, %d nodes: %s, want %s", c.t, c.n, got, c.want)
		}
	}
}
