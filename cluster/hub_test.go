package cluster_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/cluster/clustertest"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
)

// fakeSource yields objs; change replaces them and signals.
type fakeSource struct {
	mu   sync.Mutex
	objs cluster.Objects
	ch   chan struct{}
}

func (f *fakeSource) Objects() cluster.Objects {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.objs
}

func (f *fakeSource) Subscribe() (<-chan struct{}, func()) { return f.ch, func() {} }

func (f *fakeSource) change(fn func(*cluster.Objects)) {
	f.mu.Lock()
	fn(&f.objs)
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

func newFakes() (*fakeSource, *clustertest.Members) {
	pool, _ := lb.ParsePool("lan", []string{"10.77.0.200-10.77.0.201"}, true)
	src := &fakeSource{ch: make(chan struct{}, 1), objs: cluster.Objects{
		Leases: []ipam.Lease{{Node: "n1", Subnet: netip.MustParsePrefix("10.244.1.0/24"), Claimed: 1, Renewed: time.Now().UnixMilli()}},
		Policy: &policy.Snapshot{Namespaces: map[string]map[string]string{}},
		Services: []lb.Service{{Namespace: "default", Name: "web", Type: lb.TypeLoadBalancer,
			Ports: []lb.ServicePort{{Protocol: "TCP", Port: 80}}, Created: lb.Version{Wall: 1, Node: "n1"}}},
		Pools: []lb.Pool{pool},
		Gen:   cluster.Gens{Leases: 1, Policy: 1, Services: 1, Pools: 1},
	}}
	return src, clustertest.NewMembers(clustertest.Alive("n1", "n2")...)
}

// TestHubBuild: a snapshot holds the objects, the membership, the resolved
// subnets and the load-balancing state; the state is shared while its
// inputs stay and recomputed when the membership changes; local state is in
// the next snapshot.
func TestHubBuild(t *testing.T) {
	src, ms := newFakes()
	h := cluster.NewHub(cluster.HubConfig{Name: "n1", SubnetGrace: time.Hour}, src, ms)
	s1 := h.Build()
	if s1.Subnets.ByNode["n1"] != netip.MustParsePrefix("10.244.1.0/24") || len(s1.Members) != 2 {
		t.Fatalf("snapshot subnets %v members %v", s1.Subnets.ByNode, s1.Members)
	}
	vip := s1.LB.Plan.Results[lb.ServiceKey{Namespace: "default", Name: "web"}].VIP
	if !vip.IsValid() || s1.LB.Owners[vip] == "" {
		t.Fatalf("LB state %+v: want a VIP with an owner", s1.LB)
	}
	s2 := h.Build()
	if s2.LB != s1.LB || s2.Seq != s1.Seq+1 {
		t.Errorf("unchanged inputs: LB %p then %p, seq %d then %d; want the same state, the next seq", s1.LB, s2.LB, s1.Seq, s2.Seq)
	}
	ms.Set(clustertest.Alive("n1")...)
	s3 := h.Build()
	if s3.LB == s1.LB || s3.LB.Owners[vip] != "n1" || s3.LB.Gen <= s1.LB.Gen {
		t.Errorf("after n2 went: owner %q gen %d; want a new state owned by n1", s3.LB.Owners[vip], s3.LB.Gen)
	}
	h.SetLocal(func(l *cluster.Local) { l.Leaving = true })
	if s4 := h.Build(); !s4.Node.Leaving || len(s4.LB.Candidates) != 0 || s4.LB.Owners[vip] != "" {
		t.Errorf("leaving: local %+v candidates %v owner %q; want no candidate", s4.Node, s4.LB.Candidates, s4.LB.Owners[vip])
	}
}

// countingController counts passes and repair passes; block, when set,
// holds a pass until it is closed.
type countingController struct {
	mu             sync.Mutex
	passes, repair int
	last           *cluster.Snapshot
	fail           bool
}

func (c *countingController) Pass(_ context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passes++
	if repair {
		c.repair++
	}
	c.last = s
	if c.fail {
		c.fail = false
		return true, errFail
	}
	return true, nil
}

type failErr struct{}

func (failErr) Error() string { return "fail" }

var errFail = failErr{}

func (c *countingController) counts() (int, int, *cluster.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes, c.repair, c.last
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoop: the first pass repairs (it compares with what the kernel
// holds); a new snapshot makes a pass with it; a failed pass is retried as
// a repair pass; Observe sees passes.
func TestLoop(t *testing.T) {
	src, ms := newFakes()
	h := cluster.NewHub(cluster.HubConfig{Name: "n1", SubnetGrace: time.Hour, MinInterval: time.Millisecond}, src, ms)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &countingController{fail: true}
	var observed sync.Map
	l := cluster.NewLoop(h, c, cluster.LoopOptions{Name: "test", MinInterval: time.Millisecond, Retry: 10 * time.Millisecond,
		Observe: func(room string, d time.Duration, err error) { observed.Store(room, true) }})
	go h.Run(ctx)
	go l.Run(ctx)
	// The first pass failed; the retry is a repair pass too.
	waitFor(t, "the retry of a failed pass", func() bool { _, r, _ := c.counts(); return r >= 2 })
	if _, ok := observed.Load("test"); !ok {
		t.Error("Observe saw no pass")
	}
	ms.Set(clustertest.Alive("n1")...)
	waitFor(t, "a pass with the new membership", func() bool {
		_, _, s := c.counts()
		return s != nil && len(s.Members) == 1
	})
	before, _, _ := c.counts()
	l.KickRepair()
	waitFor(t, "a kicked repair pass", func() bool { p, r, _ := c.counts(); return p > before && r >= 3 })
}

// TestHubRunQuietChange: a change after a quiet spell longer than
// MinInterval is built at once, not MinInterval later (a member's failure
// moves its VIPs without that delay); a change within MinInterval of the
// last build waits for the rest of it. The clock is the Hub's: with it
// standing still a change waits the whole (hour-long) MinInterval, with it
// jumping an hour per reading the spell is always long enough.
func TestHubRunQuietChange(t *testing.T) {
	for _, tt := range []struct {
		name  string
		step  time.Duration
		built bool
	}{{"after a quiet spell", time.Hour, true}, {"within MinInterval", 0, false}} {
		t.Run(tt.name, func(t *testing.T) {
			src, ms := newFakes()
			var mu sync.Mutex
			now := time.Now()
			clock := func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				now = now.Add(tt.step)
				return now
			}
			h := cluster.NewHub(cluster.HubConfig{Name: "n1", SubnetGrace: 1000 * time.Hour, MinInterval: time.Hour, Refresh: time.Hour, Now: clock}, src, ms)
			sub := h.Subscribe()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); h.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			<-sub // the first build
			first := h.Latest().Seq
			h.Kick()
			if !tt.built {
				select {
				case <-sub:
					t.Fatalf("a change within MinInterval was built at once (seq %d after %d)", h.Latest().Seq, first)
				case <-time.After(200 * time.Millisecond):
				}
				return
			}
			select {
			case <-sub:
			case <-time.After(5 * time.Second):
				t.Fatal("a change after a quiet spell waited for MinInterval (an hour)")
			}
			if s := h.Latest().Seq; s != first+1 {
				t.Errorf("seq %d after %d", s, first)
			}
		})
	}
}
