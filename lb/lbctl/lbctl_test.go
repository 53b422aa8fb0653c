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
