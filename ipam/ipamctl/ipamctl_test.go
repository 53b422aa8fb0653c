package ipamctl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/node/events"
)

var (
	t0   = time.UnixMilli(1_700_000_000_000)
	cidr = netip.MustParsePrefix("10.244.0.0/16")
	cfg  = Config{Name: "n1", CIDR: cidr, Mask: 24, Grace: time.Hour, Settle: time.Second}
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// snap is a snapshot with leases, every named node alive, resolved at now.
func snap(joined bool, now time.Time, leases ...ipam.Lease) *cluster.Snapshot {
	s := &cluster.Snapshot{At: now, Node: cluster.Local{Name: "n1", Joined: joined}, Leases: leases}
	seen := map[string]bool{"n1": true}
	s.Members = append(s.Members, mesh.Member{Name: "n1", State: mesh.StateAlive, Self: true})
	for _, l := range leases {
		if !seen[l.Node] {
			seen[l.Node] = true
			s.Members = append(s.Members, mesh.Member{Name: l.Node, State: mesh.StateAlive})
		}
	}
	s.Subnets = ipam.Resolve(leases, s.Alive(), now, cfg.Grace)
	return s
}

func TestDecide(t *testing.T) {
	old := t0.Add(-time.Minute).UnixMilli()
	mine := ipam.Lease{Node: "n1", Subnet: pfx("10.244.7.0/24"), Claimed: old, Renewed: t0.UnixMilli()}
	fresh := ipam.Lease{Node: "n1", Subnet: pfx("10.244.7.0/24"), Claimed: t0.Add(-200 * time.Millisecond).UnixMilli(), Renewed: t0.UnixMilli()}
	earlier := ipam.Lease{Node: "n2", Subnet: pfx("10.244.7.0/24"), Claimed: old - 1000, Renewed: t0.UnixMilli()}
	tests := []struct {
		name string
		s    *cluster.Snapshot
		want Decision
	}{
		{"restart before joining: the persisted lease is used at once", snap(false, t0, mine), Decision{Subnet: mine.Subnet}},
		{"not joined, no lease: nothing claimed", snap(false, t0), Decision{Keep: true}},
		{"joined, settled lease: used, nothing written", snap(true, t0, mine), Decision{Subnet: mine.Subnet}},
		{"leaving: nothing claimed, though the lease is gone", func() *cluster.Snapshot {
			s := snap(true, t0)
			s.Node.Leaving = true
			return s
		}(), Decision{Keep: true}},
		{"fresh claim waits to settle", snap(true, t0, fresh), Decision{Keep: true, Again: 800 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Decide(cfg, tc.s, t0), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("Decide (-want +got):\n%s", d)
			}
		})
	}

	t.Run("no lease: claims a free subnet and waits", func(t *testing.T) {
		d := Decide(cfg, snap(true, t0, earlier), t0)
		if d.Put == nil || !cidr.Contains(d.Put.Subnet.Addr()) || d.Put.Subnet.Overlaps(earlier.Subnet) || d.Put.Claimed != t0.UnixMilli() {
			t.Fatalf("Decide = %+v, want a fresh claim outside %s", d, earlier.Subnet)
		}
		if d.Subnet.IsValid() || !d.Keep || d.Again == 0 {
			t.Errorf("Decide = %+v, want no subnet yet and another pass", d)
		}
	})
	t.Run("lost a conflict: claims another and says who won", func(t *testing.T) {
		d := Decide(cfg, snap(true, t0, mine, earlier), t0)
		if d.Put == nil || d.Put.Subnet == mine.Subnet || d.Lost != mine.Subnet || d.Winner != "n2" {
			t.Fatalf("Decide = %+v, want a new claim after losing %s to n2", d, mine.Subnet)
		}
	})
	t.Run("full CIDR: withdraws the lost lease, says why", func(t *testing.T) {
		small := cfg
		small.CIDR = pfx("10.244.7.0/24")
		d := Decide(small, snap(true, t0, mine, earlier), t0)
		if !d.Withdraw || d.Put != nil || d.Subnet.IsValid() || d.Refused || !strings.Contains(d.Why, "retrying") {
			t.Errorf("Decide = %+v, want withdraw and a reason", d)
		}
	})
}

type fakeLeases struct {
	puts []ipam.Lease
	dels []string
	err  error
}

func (f *fakeLeases) PutLease(l ipam.Lease) error   { f.puts = append(f.puts, l); return f.err }
func (f *fakeLeases) DeleteLease(node string) error { f.dels = append(f.dels, node); return f.err }
func (f *fakeLeases) last() (ipam.Lease, bool)      { return lastOf(f.puts) }
func lastOf(ls []ipam.Lease) (ipam.Lease, bool) {
	if len(ls) == 0 {
		return ipam.Lease{}, false
	}
	return ls[len(ls)-1], true
}

// TestPass: a pass writes what Decide says, reports the subnet, and logs a
// lost conflict as an event; a failed write is the pass's error.
func TestPass(t *testing.T) {
	leases := &fakeLeases{}
	ev := events.NewLog("n1", 10)
	c := New(Config{Name: "n1", CIDR: cidr, Mask: 24, Grace: time.Hour, Now: func() time.Time { return t0 }}, leases, ev)
	var got netip.Prefix
	calls, conflicts := 0, 0
	c.Subnet = func(p netip.Prefix, why string, _, _ bool) { got, calls = p, calls+1 }
	c.Conflict = func() { conflicts++ }
	var again time.Duration
	c.After = func(d time.Duration) { again = d }

	if _, err := c.Pass(context.Background(), snap(true, t0), false); err != nil {
		t.Fatal(err)
	}
	claim, ok := leases.last()
	if !ok || calls != 0 || again == 0 {
		t.Fatalf("first pass: lease %+v (written %v), subnet calls %d, again %v; want a claim, no subnet yet, another pass", claim, ok, calls, again)
	}
	// The claim came back by gossip and settled.
	later := t0.Add(2 * time.Second)
	c.cfg.Now = func() time.Time { return later }
	if _, err := c.Pass(context.Background(), snap(true, later, claim), false); err != nil {
		t.Fatal(err)
	}
	if got != claim.Subnet {
		t.Fatalf("settled pass reported %s, want %s", got, claim.Subnet)
	}
	// Another node claimed the same subnet earlier.
	earlier := ipam.Lease{Node: "n2", Subnet: claim.Subnet, Claimed: claim.Claimed - 5, Renewed: later.UnixMilli()}
	leases.err = errors.New("disk full")
	if _, err := c.Pass(context.Background(), snap(true, later, claim, earlier), false); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("pass with a failing store = %v, want the store's error", err)
	}
	if conflicts != 1 || len(ev.List()) != 1 || ev.List()[0].Kind != events.SubnetConflict {
		t.Errorf("conflicts %d, events %+v; want one subnet-conflict", conflicts, ev.List())
	}
}

// TestDecideAssigned: a subnet the cluster assigned (spec.podCIDR) is
// taken in an assigned lease and used as soon as the snapshot holds it,
// even over an earlier picked claim of another node; a bad one is refused
// with a line naming it and the fix; while the cluster has not assigned
// one, nothing is picked, but a subnet in use is kept.
func TestDecideAssigned(t *testing.T) {
	p := pfx("10.244.9.0/24")
	withSubnet := func(s *cluster.Snapshot, ns cluster.NodeSubnet) *cluster.Snapshot {
		s.NodeSubnet = ns
		return s
	}
	assigned := cluster.NodeSubnet{Assigned: p}

	d := Decide(cfg, withSubnet(snap(true, t0), assigned), t0)
	if d.Put == nil || !d.Put.Assigned || d.Put.Subnet != p || !d.Keep || d.Again == 0 {
		t.Fatalf("first pass = %+v, want an assigned lease on %s and another pass", d, p)
	}
	mine := *d.Put
	picked := ipam.Lease{Node: "n2", Subnet: p, Claimed: t0.Add(-time.Hour).UnixMilli(), Renewed: t0.UnixMilli()}
	d = Decide(cfg, withSubnet(snap(true, t0, mine, picked), assigned), t0)
	if d.Put != nil || d.Keep || d.Subnet != p || d.Why != "" {
		t.Errorf("with the lease in the snapshot = %+v, want %s used at once, over n2's earlier picked claim", d, p)
	}
	// A picked lease of this node gives way to the assigned subnet.
	old := ipam.Lease{Node: "n1", Subnet: pfx("10.244.3.0/24"), Claimed: t0.Add(-time.Hour).UnixMilli(), Renewed: t0.UnixMilli()}
	d = Decide(cfg, withSubnet(snap(true, t0, old), assigned), t0)
	if d.Put == nil || d.Put.Subnet != p || !d.Put.Assigned {
		t.Errorf("with a picked lease = %+v, want an assigned lease on %s", d, p)
	}
	// Another node holds an assigned lease on it: said, not used.
	theirs := ipam.Lease{Node: "n2", Subnet: p, Claimed: mine.Claimed - 5, Renewed: t0.UnixMilli(), Assigned: true}
	d = Decide(cfg, withSubnet(snap(true, t0, mine, theirs), assigned), t0)
	if d.Subnet.IsValid() || !d.Refused || !strings.Contains(d.Why, "also assigned to node n2") {
		t.Errorf("with n2 holding it = %+v, want no subnet and a line naming n2", d)
	}
	for _, bad := range []struct{ subnet, says string }{
		{"10.99.0.0/24", "outside netloom's cluster CIDR 10.244.0.0/16"},
		{"10.0.0.0/8", "outside netloom's cluster CIDR"},
		{"10.244.9.0/31", "no room for pods"},
		{"fd00::/64", "not IPv4"},
	} {
		d := Decide(cfg, withSubnet(snap(true, t0), cluster.NodeSubnet{Assigned: pfx(bad.subnet)}), t0)
		if d.Put != nil || d.Subnet.IsValid() || d.Waiting || !d.Refused || !strings.Contains(d.Why, bad.says) || strings.Contains(d.Why, "\n") {
			t.Errorf("assigned %s: %+v, want nothing written and one line saying %q", bad.subnet, d, bad.says)
		}
	}

	// A bad one changes nothing: the subnet in use stays, and the line says
	// why the assigned one is not taken.
	d = Decide(cfg, withSubnet(snap(true, t0, old), cluster.NodeSubnet{Assigned: pfx("10.99.0.0/24")}), t0)
	if d.Subnet != old.Subnet || (d.Put != nil && d.Put.Subnet != old.Subnet) || !d.Refused || !strings.Contains(d.Why, "outside") || !strings.Contains(d.Why, "keeping "+old.Subnet.String()) {
		t.Errorf("bad assigned subnet with %s in use = %+v, want it kept and the reason", old.Subnet, d)
	}

	wait := cluster.NodeSubnet{Wait: "kube-controller-manager has not set spec.podCIDR of node n1 yet"}
	d = Decide(cfg, withSubnet(snap(true, t0), wait), t0)
	if d.Put != nil || d.Subnet.IsValid() || !d.Waiting || d.Why != wait.Wait {
		t.Errorf("waiting without a lease = %+v, want nothing picked and the reason", d)
	}
	d = Decide(cfg, withSubnet(snap(true, t0, old), wait), t0)
	if d.Subnet != old.Subnet || d.Waiting {
		t.Errorf("waiting with a picked subnet in use = %+v, want %s kept", d, old.Subnet)
	}
	// An assigned lease is kept when the source has no word on it (a view
	// saved before the node had its Node object, say).
	d = Decide(cfg, snap(true, t0, mine), t0)
	if d.Subnet != p || (d.Put != nil && d.Put.Subnet != p) {
		t.Errorf("assigned lease, source silent = %+v, want %s kept", d, p)
	}
}
