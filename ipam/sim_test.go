package ipam

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

func nodeNames(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = nodeName(from + i)
	}
	return out
}

// view is one side's copy of the replicated store: node -> lease (one
// lease per node, as the store holds it) and the clock of the simulation.
type view struct {
	cidr   netip.Prefix
	mask   int
	grace  time.Duration
	now    time.Time
	leases map[string]Lease
}

func newView(cidr string, mask int) *view {
	return &view{cidr: pfx(cidr), mask: mask, grace: grace, now: t0, leases: map[string]Lease{}}
}

func (v *view) list() []Lease { return slices.Collect(maps.Values(v.leases)) }

func (v *view) resolve(alive map[string]bool) Table {
	return Resolve(v.list(), alive, v.now, v.grace)
}

// round runs one round at the next second: every node in nodes resolves
// the same snapshot with the alive set and decides with Claim; then all
// writes land at once (the worst case for concurrent claims: every claim
// of a round has the same time). A node that gets an error withdraws its
// lease. It returns the number of new claims and the nodes that got
// ErrFull.
func (v *view) round(t *testing.T, nodes []string, alive map[string]bool) (claims int, full []string) {
	t.Helper()
	v.now = v.now.Add(time.Second)
	snap := v.resolve(alive)
	writes := map[string]*Lease{}
	for _, n := range nodes {
		cur, ok := v.leases[n]
		if !ok {
			cur = Lease{Node: n}
		}
		next, err := Claim(v.cidr, v.mask, snap, cur, v.now, 0, 0)
		switch {
		case errors.Is(err, ErrFull):
			full = append(full, n)
			writes[n] = nil
		case err != nil:
			t.Fatalf("claim %s: %v", n, err)
		case next != cur:
			if next.Claimed != cur.Claimed || next.Subnet != cur.Subnet {
				claims++
			}
			writes[n] = &next
		}
	}
	for n, l := range writes {
		if l == nil {
			delete(v.leases, n)
		} else {
			v.leases[n] = *l
		}
	}
	return claims, full
}

// simResult is how a simulation ended.
type simResult struct {
	rounds int
	full   []string
	table  Table
}

// simulate runs rounds until a round makes no new claim and leaves no
// loser, at most maxRounds. It checks after every round that a node that
// held a subnet in the resolved table keeps it (a later claim never takes
// it away) and returns the final table.
func (v *view) simulate(t *testing.T, nodes []string, alive map[string]bool, maxRounds int) simResult {
	t.Helper()
	settled := map[string]netip.Prefix{}
	for r := 1; r <= maxRounds; r++ {
		claims, full := v.round(t, nodes, alive)
		tab := v.resolve(alive)
		for n, p := range settled {
			if tab.ByNode[n] != p {
				t.Fatalf("round %d: %s lost its settled subnet %s (now %s)", r, n, p, tab.ByNode[n])
			}
		}
		// A winner whose lease was not re-claimed this round is settled.
		for n, p := range tab.ByNode {
			settled[n] = p
		}
		if claims == 0 && len(tab.Losers) == 0 {
			slices.Sort(full)
			return simResult{rounds: r, full: full, table: tab}
		}
	}
	t.Fatalf("no convergence after %d rounds", maxRounds)
	return simResult{}
}

// checkTable asserts that every node in nodes except want-full ones owns
// exactly one /mask subnet inside cidr, that no two overlap, and that the
// table has no loser.
func checkTable(t *testing.T, v *view, nodes []string, res simResult, wantFull int) {
	t.Helper()
	tab := res.table
	if len(tab.Losers) != 0 {
		t.Errorf("losers left: %v", tab.Losers)
	}
	if len(res.full) != wantFull {
		t.Errorf("%d nodes got ErrFull, want %d", len(res.full), wantFull)
	}
	if got, want := len(tab.ByNode), len(nodes)-wantFull; got != want {
		t.Errorf("%d nodes own a subnet, want %d", got, want)
	}
	subnets := slices.Collect(maps.Values(tab.ByNode))
	slices.SortFunc(subnets, netip.Prefix.Compare)
	for i, p := range subnets {
		if !fits(v.cidr, v.mask, p) {
			t.Errorf("subnet %s is not a /%d in %s", p, v.mask, v.cidr)
		}
		if i > 0 && subnets[i-1].Overlaps(p) {
			t.Errorf("subnets %s and %s overlap", subnets[i-1], p)
		}
	}
	for _, n := range res.full {
		if _, ok := tab.ByNode[n]; ok {
			t.Errorf("%s got ErrFull but owns %s", n, tab.ByNode[n])
		}
	}
}

func TestSimulateConcurrentJoin(t *testing.T) {
	tests := []struct {
		cidr     string
		mask     int
		nodes    int
		wantFull int
	}{
		{"10.244.0.0/16", 24, 10, 0},
		{"10.244.0.0/16", 24, 50, 0},
		{"10.244.0.0/16", 24, 200, 0},
		{"10.244.0.0/16", 24, 250, 0}, // nearly full: 6 of 256 left
		{"10.244.0.0/16", 24, 256, 0}, // exactly full
		{"10.244.0.0/20", 24, 15, 0},
		{"10.244.0.0/20", 24, 20, 4}, // more nodes than subnets
		{"fd00:10::/56", 64, 200, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%d_nodes_%d", tt.cidr, tt.mask, tt.nodes), func(t *testing.T) {
			v := newView(tt.cidr, tt.mask)
			ns := nodeNames(0, tt.nodes)
			// Every round settles at least one contested subnet, so
			// nodes+1 rounds always suffice.
			res := v.simulate(t, ns, alive(ns...), tt.nodes+1)
			checkTable(t, v, ns, res, tt.wantFull)
			t.Logf("%d nodes converged in %d rounds", tt.nodes, res.rounds)
			// A further round changes nothing.
			if claims, _ := v.round(t, ns, alive(ns...)); claims != 0 {
				t.Errorf("round after convergence made %d claims", claims)
			}
		})
	}
}

// Many nodes claiming the very same subnet at the same moment: exactly one
// wins, the others re-pick and converge.
func TestSimulateSameSubnet(t *testing.T) {
	v := newView("10.244.0.0/22", 24) // 4 subnets
	ns := nodeNames(0, 4)
	for _, n := range ns {
		v.leases[n] = Lease{Node: n, Subnet: pfx("10.244.2.0/24"), Claimed: t0.UnixMilli(), Renewed: t0.UnixMilli()}
	}
	tab := v.resolve(alive(ns...))
	if diff := cmp.Diff(nodes(map[string]string{"node-000": "10.244.2.0/24"}), tab.ByNode, cmpPrefix); diff != "" {
		t.Errorf("winners (-want +got):\n%s", diff)
	}
	if len(tab.Losers) != 3 {
		t.Errorf("losers = %v, want 3", tab.Losers)
	}
	res := v.simulate(t, ns, alive(ns...), 5)
	checkTable(t, v, ns, res, 0)
	if got := res.table.ByNode["node-000"]; got != pfx("10.244.2.0/24") {
		t.Errorf("winner moved to %s", got)
	}
}

// Two sides of a partition allocate independently, then the stores merge:
// the earlier claim keeps each contested subnet, the losers re-pick, and
// the cluster converges. Nodes on both sides join while partitioned.
func TestSimulatePartitionHeal(t *testing.T) {
	for _, tc := range []struct {
		name      string
		partition time.Duration // how long the sides stay apart before joiners come
	}{
		{"shorter than grace", time.Minute},
		{"longer than grace", 2 * grace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 16 subnets, 10 old nodes, 4 joiners per side: 8 joiners
			// for 6 free subnets, so the sides must collide, and after
			// the heal 2 nodes find the CIDR full.
			base := newView("10.244.0.0/20", 24)
			old := nodeNames(0, 10)
			base.simulate(t, old, alive(old...), 11)
			before := base.resolve(alive(old...)).ByNode

			sideA, sideB := old[:5], old[5:]
			a, b := *base, *base
			a.leases, b.leases = maps.Clone(base.leases), maps.Clone(base.leases)
			a.now, b.now = a.now.Add(tc.partition), b.now.Add(tc.partition)
			joinA, joinB := nodeNames(100, 4), nodeNames(200, 4)
			// Side B starts a moment later, so its claims are later.
			b.now = b.now.Add(500 * time.Millisecond)
			allA := append(slices.Clone(sideA), joinA...)
			allB := append(slices.Clone(sideB), joinB...)
			ra := a.simulate(t, allA, alive(allA...), 20)
			rb := b.simulate(t, allB, alive(allB...), 20)
			if tc.partition < grace {
				// The other side's subnets are reserved: none reused.
				for _, n := range sideB {
					if got := ra.table.Reserved[before[n]]; got != n {
						t.Errorf("side A: %s of %s reserved by %q", before[n], n, got)
					}
				}
			}

			// Heal: merge the stores (last writer per node wins; each
			// node writes only its own lease, so take the side it was on).
			merged := newView("10.244.0.0/20", 24)
			merged.now = maxTime(a.now, b.now)
			for _, n := range allA {
				if l, ok := a.leases[n]; ok {
					merged.leases[n] = l
				}
			}
			for _, n := range allB {
				if l, ok := b.leases[n]; ok {
					merged.leases[n] = l
				}
			}
			all := append(slices.Clone(allA), allB...)
			healed := merged.resolve(alive(all...))
			if len(healed.Losers) == 0 {
				t.Fatalf("expected conflicts after the partition, got none (A %v, B %v)", ra.table.ByNode, rb.table.ByNode)
			}
			// Deterministic: the earlier claim of each contested subnet won.
			for _, l := range healed.Losers {
				w := healed.Owner[overlapping(healed, l.Subnet)]
				wl := merged.leases[w]
				if claimOrder(wl, l) > 0 {
					t.Errorf("loser %s (claimed %d) beat by later claim of %s (claimed %d)", l.Node, l.Claimed, w, wl.Claimed)
				}
			}
			// Old nodes keep their pre-partition subnets.
			for _, n := range old {
				if got := healed.ByNode[n]; got != before[n] {
					t.Errorf("%s has %s after heal, had %s", n, got, before[n])
				}
			}
			res := merged.simulate(t, all, alive(all...), len(all)+1)
			checkTable(t, merged, all, res, 2)
			t.Logf("healed in %d rounds, %d conflicts", res.rounds, len(healed.Losers))
		})
	}
}

func overlapping(t Table, p netip.Prefix) netip.Prefix {
	for q := range t.Owner {
		if q.Overlaps(p) {
			return q
		}
	}
	return netip.Prefix{}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// A full CIDR: the newcomer gets ErrFull, nobody's subnet is taken, and
// the owners keep theirs.
func TestSimulateFull(t *testing.T) {
	v := newView("10.244.0.0/22", 24)
	ns := nodeNames(0, 4)
	v.simulate(t, ns, alive(ns...), 5)
	before := maps.Clone(v.resolve(alive(ns...)).ByNode)

	all := append(slices.Clone(ns), "late")
	res := v.simulate(t, all, alive(all...), 3)
	if diff := cmp.Diff([]string{"late"}, res.full); diff != "" {
		t.Errorf("full (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, res.table.ByNode, cmpPrefix); diff != "" {
		t.Errorf("owners changed (-before +after):\n%s", diff)
	}
	_, err := PickFree(v.cidr, v.mask, res.table, "late")
	if !errors.Is(err, ErrFull) || err.Error() != "cluster CIDR 10.244.0.0/22 has no free /24 subnet left" {
		t.Errorf("PickFree err = %v", err)
	}
	// An owner still gets its own subnet from PickFree.
	if got, err := PickFree(v.cidr, v.mask, res.table, ns[2]); err != nil || got != before[ns[2]] {
		t.Errorf("owner PickFree = %s, %v; want %s", got, err, before[ns[2]])
	}
	// Once a node leaves (its lease is deleted), the newcomer gets its subnet.
	gone := ns[1]
	delete(v.leases, gone)
	rest := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == gone })
	res = v.simulate(t, rest, alive(rest...), 3)
	checkTable(t, v, rest, res, 0)
	if got := res.table.ByNode["late"]; got != before[gone] {
		t.Errorf("late got %s, want the freed %s", got, before[gone])
	}
}

// A node that restarts finds its own lease in the store and keeps the
// subnet, whether the others already see it alive or not (within grace),
// and whether or not it was away longer than grace (if nobody took it).
func TestRestartKeepsSubnet(t *testing.T) {
	for _, tc := range []struct {
		name     string
		away     time.Duration
		seenLive bool
	}{
		{"quick, seen alive", time.Second, true},
		{"quick, not yet seen alive", time.Second, false},
		{"away longer than grace, seen alive", 3 * grace, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView("10.244.0.0/16", 24)
			ns := nodeNames(0, 10)
			v.simulate(t, ns, alive(ns...), 11)
			me := ns[4]
			mine := v.leases[me]
			v.now = v.now.Add(tc.away)
			others := ns[:4]
			liveSet := alive(others...)
			if tc.seenLive {
				liveSet[me] = true
			}
			tab := v.resolve(liveSet)
			got, err := Claim(v.cidr, v.mask, tab, mine, v.now, 0, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if got.Subnet != mine.Subnet || got.Claimed != mine.Claimed {
				t.Errorf("after restart %+v, had %+v", got, mine)
			}
			if got.Renewed != v.now.UnixMilli() {
				t.Errorf("lease not renewed: %d", got.Renewed)
			}
		})
	}
}

// A dead node's subnet is reserved during grace, then reusable; if the node
// comes back after its subnet was reused, it picks a new one and the new
// owner keeps it.
func TestGraceExpiry(t *testing.T) {
	v := newView("10.244.0.0/23", 24) // 2 subnets
	ns := []string{"a", "dead"}
	v.simulate(t, ns, alive(ns...), 3)
	deadSubnet := v.resolve(alive(ns...)).ByNode["dead"]
	deadRenewed := time.UnixMilli(v.leases["dead"].Renewed)

	// "dead" stops; "c" joins. Within grace the subnet is reserved.
	live := []string{"a", "c"}
	v.now = deadRenewed.Add(grace - 2*time.Second)
	_, full := v.round(t, live, alive(live...))
	if diff := cmp.Diff([]string{"c"}, full); diff != "" {
		t.Errorf("within grace, full (-want +got):\n%s", diff)
	}
	if tab := v.resolve(alive(live...)); tab.Reserved[deadSubnet] != "dead" {
		t.Errorf("within grace: reserved = %v", tab.Reserved)
	}
	// The round at grace: the lease expired, c takes the subnet.
	res := v.simulate(t, live, alive(live...), 3)
	checkTable(t, v, live, res, 0)
	if got := res.table.ByNode["c"]; got != deadSubnet {
		t.Errorf("c got %s, want the expired %s", got, deadSubnet)
	}
	if len(res.table.Reserved) != 0 {
		t.Errorf("reserved after grace: %v", res.table.Reserved)
	}

	// "dead" comes back with its old lease: c keeps the subnet, "dead" is a
	// loser and finds the CIDR full.
	back := []string{"a", "c", "dead"}
	tab := v.resolve(alive(back...))
	if got := tab.ByNode["c"]; got != deadSubnet {
		t.Errorf("after return c has %s, want %s", got, deadSubnet)
	}
	if diff := cmp.Diff([]Lease{v.leases["dead"]}, tab.Losers, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("losers after return (-want +got):\n%s", diff)
	}
	res = v.simulate(t, back, alive(back...), 3)
	if diff := cmp.Diff([]string{"dead"}, res.full); diff != "" {
		t.Errorf("after return, full (-want +got):\n%s", diff)
	}
}

// A node that leaves deletes its lease: its subnet is free at once, without
// waiting for grace.
func TestLeaveFreesAtOnce(t *testing.T) {
	v := newView("10.244.0.0/23", 24)
	ns := []string{"a", "b"}
	v.simulate(t, ns, alive(ns...), 3)
	freed := v.leases["b"].Subnet
	delete(v.leases, "b") // netloom leave
	live := []string{"a", "c"}
	res := v.simulate(t, live, alive(live...), 3)
	checkTable(t, v, live, res, 0)
	if got := res.table.ByNode["c"]; got != freed {
		t.Errorf("c got %s, want the freed %s", got, freed)
	}
}

// Leases of other sizes (a node with an old mask setting) block the
// subnets they overlap; the older claim wins.
func TestSimulateOverlappingPrefixes(t *testing.T) {
	v := newView("10.244.0.0/22", 24)
	// "wide" claimed a /23 with an old setting before anyone else.
	v.leases["wide"] = Lease{Node: "wide", Subnet: pfx("10.244.2.0/23"), Claimed: t0.UnixMilli(), Renewed: t0.UnixMilli()}
	// "narrow" claimed a /24 inside it later.
	v.leases["narrow"] = Lease{Node: "narrow", Subnet: pfx("10.244.3.0/24"), Claimed: t0.UnixMilli() + 1, Renewed: t0.UnixMilli() + 1}
	ns := []string{"wide", "narrow", "x"}
	tab := v.resolve(alive(ns...))
	if diff := cmp.Diff(nodes(map[string]string{"wide": "10.244.2.0/23"}), tab.ByNode, cmpPrefix); diff != "" {
		t.Errorf("winners (-want +got):\n%s", diff)
	}
	// Only "narrow" and "x" run the current setting; "wide" is left as is.
	res := v.simulate(t, []string{"narrow", "x"}, alive(ns...), 4)
	want := map[string]netip.Prefix{"wide": pfx("10.244.2.0/23")}
	for _, n := range []string{"narrow", "x"} {
		p := res.table.ByNode[n]
		if p.Overlaps(pfx("10.244.2.0/23")) || !fits(v.cidr, 24, p) {
			t.Errorf("%s got %s", n, p)
		}
		want[n] = p
	}
	if diff := cmp.Diff(want, res.table.ByNode, cmpPrefix); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

// sameClaim compares leases without their renewal time.
func sameClaim(a, b Lease) bool {
	a.Renewed, b.Renewed = 0, 0
	return a == b
}

// The same as TestSimulateConcurrentJoin, but every node decides on its own
// copy of the store, which receives each newer lease of another node only
// with probability 1/2 per round (gossip lag). Claims made on stale views
// lose to the earlier claims they did not see, and the cluster still
// converges.
func TestSimulateGossipLag(t *testing.T) {
	tests := []struct {
		cidr     string
		mask     int
		nodes    int
		wantFull int
	}{
		{"10.244.0.0/16", 24, 10, 0},
		{"10.244.0.0/16", 24, 50, 0},
		{"10.244.0.0/16", 24, 200, 0},
		{"10.244.0.0/16", 24, 250, 0},
		{"10.244.0.0/20", 24, 20, 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%d_nodes_%d", tt.cidr, tt.mask, tt.nodes), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tt.nodes), 7))
			ns := nodeNames(0, tt.nodes)
			live := alive(ns...)
			truth := newView(tt.cidr, tt.mask)
			views := map[string]map[string]Lease{}
			for _, n := range ns {
				views[n] = map[string]Lease{}
			}
			settled := map[string]netip.Prefix{}
			for round := 1; round <= 500; round++ {
				truth.now = truth.now.Add(time.Second)
				claims := 0
				writes := map[string]*Lease{}
				for _, n := range ns {
					own := slices.Collect(maps.Values(views[n]))
					snap := Resolve(own, live, truth.now, truth.grace)
					cur, ok := views[n][n]
					if !ok {
						cur = Lease{Node: n}
					}
					next, err := Claim(truth.cidr, truth.mask, snap, cur, truth.now, 0, 30*time.Second)
					switch {
					case errors.Is(err, ErrFull):
						if ok {
							writes[n] = nil
						}
					case err != nil:
						t.Fatal(err)
					case next != cur:
						if next.Subnet != cur.Subnet || next.Claimed != cur.Claimed {
							claims++
						}
						writes[n] = &next
					}
				}
				for n, l := range writes {
					if l == nil {
						delete(truth.leases, n)
						delete(views[n], n)
					} else {
						truth.leases[n] = *l
						views[n][n] = *l
					}
				}
				// Gossip: each view learns each change with probability 1/2.
				lagging := 0
				for _, n := range ns {
					for m := range views[n] {
						if _, ok := truth.leases[m]; !ok && r.IntN(2) == 0 {
							delete(views[n], m)
						}
					}
					for m, l := range truth.leases {
						if views[n][m] != l && r.IntN(2) == 0 {
							views[n][m] = l
						}
					}
					if !maps.EqualFunc(views[n], truth.leases, sameClaim) {
						lagging++
					}
				}
				tab := truth.resolve(live)
				for n, p := range settled {
					if tab.ByNode[n] != p {
						t.Fatalf("round %d: %s lost its settled subnet %s (now %s)", round, n, p, tab.ByNode[n])
					}
				}
				maps.Copy(settled, tab.ByNode)
				if claims == 0 && len(tab.Losers) == 0 && lagging == 0 && len(tab.ByNode) == tt.nodes-tt.wantFull {
					res := simResult{rounds: round, table: tab}
					for _, n := range ns {
						if _, ok := tab.ByNode[n]; !ok {
							res.full = append(res.full, n)
						}
					}
					checkTable(t, truth, ns, res, tt.wantFull)
					t.Logf("%d nodes converged in %d rounds", tt.nodes, round)
					return
				}
			}
			t.Fatal("no convergence after 500 rounds")
		})
	}
}
