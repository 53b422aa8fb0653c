package lbctl

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/node/events"
)

type fakeAnnouncer struct {
	owned       []netip.Addr
	reannounced int
}

func (f *fakeAnnouncer) SetOwned(v []netip.Addr) { f.owned = v }
func (f *fakeAnnouncer) Reannounce()             { f.reannounced++ }

type fakeAssignments struct {
	recorded map[lb.ServiceKey]lb.Assignment
	deleted  map[lb.ServiceKey]bool // services the store holds tombstones of
	writes   int
}

func (f *fakeAssignments) Record(puts map[lb.ServiceKey]lb.Assignment, dels []lb.ServiceKey) error {
	f.writes++
	for k, v := range puts {
		f.recorded[k] = v
	}
	for _, k := range dels {
		delete(f.recorded, k)
	}
	return nil
}

func (f *fakeAssignments) Deleted() []lb.ServiceKey {
	var out []lb.ServiceKey
	for k := range f.recorded {
		if f.deleted[k] {
			out = append(out, k)
		}
	}
	return out
}

func pool(t *testing.T) lb.Pool {
	p, err := lb.ParsePool("lan", []string{"10.77.0.200-10.77.0.209"}, true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func svc(name string, created int64, creator string) lb.Service {
	return lb.Service{Namespace: "default", Name: name, Type: lb.TypeLoadBalancer,
		Ports: []lb.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}, Created: lb.Version{Wall: created, Node: creator}}
}

// snap builds a snapshot of the services on the alive nodes, with the
// assignments recorded in as, as the Hub does.
func snap(t *testing.T, joined bool, alive []string, as *fakeAssignments, svcs ...lb.Service) *cluster.Snapshot {
	s := &cluster.Snapshot{Node: cluster.Local{Name: "n1", Joined: joined}, Pools: []lb.Pool{pool(t)}}
	for _, n := range alive {
		s.Members = append(s.Members, mesh.Member{Name: n, State: mesh.StateAlive, Self: n == "n1"})
	}
	for _, sv := range svcs {
		sv.Assigned = as.recorded[sv.Key()]
		s.Services = append(s.Services, sv)
	}
	s.LB = cluster.ComputeLB(lb.Config{}, s, cluster.Candidates(s))
	return s
}

// TestPass: the node announces exactly the VIPs it owns once it has heard
// the cluster; it records the assignments it is the writer of; a VIP that
// moves is an event and a count; a member joining asks for gratuitous ARP.
func TestPass(t *testing.T) {
	an := &fakeAnnouncer{}
	as := &fakeAssignments{recorded: map[lb.ServiceKey]lb.Assignment{}}
	ev := events.NewLog("n1", 10)
	failovers := 0
	c := New(Config{Name: "n1", Now: func() time.Time { return time.UnixMilli(1000) }}, an, as, ev, Hooks{Failover: func() { failovers++ }})
	ctx := context.Background()
	var svcs []lb.Service
	for i, n := range []string{"a", "b", "c", "d", "e", "f"} {
		svcs = append(svcs, svc(n, int64(i+1), "n1"))
	}

	if _, err := c.Pass(ctx, snap(t, false, []string{"n1", "n2"}, as, svcs...), false); err != nil {
		t.Fatal(err)
	}
	if len(an.owned) != 0 || as.writes != 0 {
		t.Fatalf("before joining: owned %v, writes %d; want nothing announced or recorded", an.owned, as.writes)
	}
	s := snap(t, true, []string{"n1", "n2"}, as, svcs...)
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if len(as.recorded) != len(svcs) {
		t.Fatalf("recorded %d assignments, want %d (n1 created every service)", len(as.recorded), len(svcs))
	}
	want := Owned("n1", s)
	if len(want) == 0 || len(want) == len(svcs) || !slices.Equal(an.owned, want) {
		t.Fatalf("owned %v, want %v (some, not all, of %d VIPs on 2 nodes)", an.owned, want, len(svcs))
	}
	// n2 fails: n1 takes every VIP, and each move is an event.
	moved := len(svcs) - len(want)
	s = snap(t, true, []string{"n1"}, as, svcs...)
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if len(an.owned) != len(svcs) || failovers != moved {
		t.Fatalf("after n2 failed: owned %d VIPs, %d failovers; want %d and %d", len(an.owned), failovers, len(svcs), moved)
	}
	// A member joins: gratuitous ARP on the next pass.
	c.Reannounce()
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if an.reannounced != 1 {
		t.Errorf("reannounced %d times, want 1", an.reannounced)
	}
	// A recorded assignment whose service has not arrived (a broadcast of
	// the record overtook the service after a heal) stays: deleting it
	// would lose the address the service holds on the other side.
	s = snap(t, true, []string{"n1"}, as, svcs[1:]...)
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := as.recorded[svcs[0].Key()]; !ok {
		t.Errorf("recorded %v without %s, whose service is not deleted, only not here: want its record kept", as.recorded, svcs[0].Key())
	}
	// A deleted service's assignment goes (n1 is the lowest candidate).
	as.deleted = map[lb.ServiceKey]bool{svcs[0].Key(): true}
	s = snap(t, true, []string{"n1"}, as, svcs[1:]...)
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := as.recorded[svcs[0].Key()]; ok || len(as.recorded) != len(svcs)-1 {
		t.Errorf("recorded %v after deleting %s, want it gone", as.recorded, svcs[0].Key())
	}
	if st := c.Status(); st.Snapshot != s || len(st.Owned) != len(svcs)-1 {
		t.Errorf("status = %+v, want the last snapshot and its owned VIPs", st)
	}
	// Leaving: nothing announced.
	s = snap(t, true, []string{"n1"}, as, svcs...)
	s.Node.Leaving = true
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if len(an.owned) != 0 {
		t.Errorf("leaving: owned %v, want none", an.owned)
	}
}

// TestPassHoldsWritesForAnotherMember: after a heal, n1 has a service n2
// created but not yet its record, and does not see n2 alive yet. n1 is the
// writer then, but waits: the record that follows is kept, not replaced by
// a fresh address. A service whose creator is not a member (Kubernetes
// mode) is written at once, and a held write is made once it has waited.
func TestPassHoldsWritesForAnotherMember(t *testing.T) {
	now := time.UnixMilli(100_000)
	an := &fakeAnnouncer{}
	as := &fakeAssignments{recorded: map[lb.ServiceKey]lb.Assignment{}}
	var kicks []time.Duration
	c := New(Config{Name: "n1", Now: func() time.Time { return now }, Settle: 10 * time.Second}, an, as, events.NewLog("n1", 10), Hooks{})
	c.After = func(d time.Duration) { kicks = append(kicks, d) }
	ctx := context.Background()
	// n2 created split-a and recorded 10.77.0.201 (the first of the pool
	// goes to web, n1's).
	web, a := svc("web", 1, "n1"), svc("split-a", 2, "n2")
	snapDead := func(svcs ...lb.Service) *cluster.Snapshot {
		s := snap(t, true, []string{"n1"}, as, svcs...)
		s.Members = append(s.Members, mesh.Member{Name: "n2", State: mesh.StateDead})
		s.LB = cluster.ComputeLB(lb.Config{}, s, cluster.Candidates(s))
		return s
	}
	if _, err := c.Pass(ctx, snapDead(web), false); err != nil {
		t.Fatal(err)
	}
	n2Record := lb.Assignment{VIP: netip.MustParseAddr("10.77.0.202"), Pool: "lan", ClusterIP: netip.MustParseAddr("10.96.0.3")}

	// The service arrives, its record not yet.
	s := snapDead(web, a)
	if w := s.LB.Plan.Writes; len(w) != 1 || w[0].Writer != "n1" {
		t.Fatalf("plan writes %+v, want n1 to write split-a (n2 is dead)", w)
	}
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := as.recorded[a.Key()]; ok {
		t.Fatalf("n1 recorded %v for split-a at once, want the write held", as.recorded[a.Key()])
	}
	if !slices.Equal(kicks, []time.Duration{10 * time.Second}) {
		t.Errorf("kicks %v, want one after the settle time", kicks)
	}
	// The record arrives: nothing to write, nothing held any more.
	now = now.Add(time.Second)
	as.recorded[a.Key()] = n2Record
	if _, err := c.Pass(ctx, snapDead(web, a), false); err != nil {
		t.Fatal(err)
	}
	if got := as.recorded[a.Key()]; !got.Equal(n2Record) || len(c.held) != 0 {
		t.Errorf("split-a recorded %+v (held %v), want n2's record %+v kept", got, c.held, n2Record)
	}

	// A service created by a member that never sends its record: held
	// until the settle time is over, then written.
	b := svc("lost", 3, "n2")
	if _, err := c.Pass(ctx, snapDead(web, a, b), false); err != nil {
		t.Fatal(err)
	}
	if _, ok := as.recorded[b.Key()]; ok {
		t.Fatalf("recorded %s at once, want it held", b.Key())
	}
	now = now.Add(10 * time.Second)
	if _, err := c.Pass(ctx, snapDead(web, a, b), false); err != nil {
		t.Fatal(err)
	}
	if got := as.recorded[b.Key()]; !got.VIP.IsValid() {
		t.Errorf("after the settle time %s is recorded as %+v, want a VIP", b.Key(), got)
	}

	// Kubernetes mode: the creator is the object's UID, not a member; the
	// lowest candidate writes at once.
	k := svc("from-api", 4, "6f1c2a4e-uid")
	if _, err := c.Pass(ctx, snapDead(web, a, b, k), false); err != nil {
		t.Fatal(err)
	}
	if got := as.recorded[k.Key()]; !got.VIP.IsValid() {
		t.Errorf("%s (created by a UID) recorded as %+v, want written at once", k.Key(), got)
	}
}

func TestHeld(t *testing.T) {
	as := &fakeAssignments{recorded: map[lb.ServiceKey]lb.Assignment{}}
	s := snap(t, true, []string{"n1", "n3"}, as, svc("mine", 1, "n1"), svc("theirs", 2, "n2"), svc("api", 3, "uid-1"), svc("not-put", 4, "n2"))
	s.Members = append(s.Members, mesh.Member{Name: "n2", State: mesh.StateLeft})
	puts := map[lb.ServiceKey]lb.Assignment{}
	for _, n := range []string{"mine", "theirs", "api"} {
		puts[lb.ServiceKey{Namespace: "default", Name: n}] = lb.Assignment{}
	}
	got := Held("n1", s, puts)
	if want := []lb.ServiceKey{{Namespace: "default", Name: "theirs"}}; !slices.Equal(got, want) {
		t.Errorf("Held = %v, want %v", got, want)
	}
	if got := Held("n1", s, nil); got != nil {
		t.Errorf("Held with no puts = %v, want nil", got)
	}
}
