package ipam

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	t0    = time.UnixMilli(1_700_000_000_000)
	grace = 10 * time.Minute
)

// ms returns t0 + d in unix ms.
func ms(d time.Duration) int64 { return t0.Add(d).UnixMilli() }

func lease(node, subnet string, claimed time.Duration, seq uint32, renewed time.Duration) Lease {
	return Lease{Node: node, Subnet: pfx(subnet), Claimed: ms(claimed), ClaimedSeq: seq, Renewed: ms(renewed)}
}

func assigned(l Lease) Lease {
	l.Assigned = true
	return l
}

func alive(nodes ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range nodes {
		m[n] = true
	}
	return m
}

func nodes(m map[string]string) map[string]netip.Prefix {
	out := map[string]netip.Prefix{}
	for n, p := range m {
		out[n] = pfx(p)
	}
	return out
}

func owners(m map[string]string) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	for p, n := range m {
		out[pfx(p)] = n
	}
	return out
}

var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestResolve(t *testing.T) {
	tests := []struct {
		name   string
		leases []Lease
		alive  map[string]bool
		now    time.Duration
		want   Table
	}{
		{
			name: "empty",
			want: Table{ByNode: nodes(nil), Owner: owners(nil), Reserved: owners(nil)},
		},
		{
			name:   "distinct subnets",
			leases: []Lease{lease("a", "10.244.1.0/24", 0, 0, 0), lease("b", "10.244.2.0/24", 0, 0, 0)},
			alive:  alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24", "b": "10.244.2.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a", "10.244.2.0/24": "b"}),
				Reserved: owners(nil),
			},
		},
		{
			name: "same subnet: earliest claim wins",
			leases: []Lease{
				lease("a", "10.244.1.0/24", 2*time.Second, 0, 2*time.Second),
				lease("b", "10.244.1.0/24", time.Second, 0, 5*time.Second),
			},
			alive: alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"b": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "b"}),
				Losers:   []Lease{lease("a", "10.244.1.0/24", 2*time.Second, 0, 2*time.Second)},
				Reserved: owners(nil),
			},
		},
		{
			name: "assigned wins over an earlier picked claim",
			leases: []Lease{
				lease("a", "10.244.1.0/24", time.Second, 0, 5*time.Second),
				assigned(lease("b", "10.244.1.0/24", 4*time.Second, 0, 4*time.Second)),
			},
			alive: alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"b": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "b"}),
				Losers:   []Lease{lease("a", "10.244.1.0/24", time.Second, 0, 5*time.Second)},
				Reserved: owners(nil),
			},
		},
		{
			name: "assigned wins over an overlapping picked supernet",
			leases: []Lease{
				lease("a", "10.244.0.0/16", time.Second, 0, time.Second),
				assigned(lease("b", "10.244.1.0/24", 2*time.Second, 0, 2*time.Second)),
			},
			alive: alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"b": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "b"}),
				Losers:   []Lease{lease("a", "10.244.0.0/16", time.Second, 0, time.Second)},
				Reserved: owners(nil),
			},
		},
		{
			name: "an assigned lease of a dead node does not lapse for a later picked claim",
			leases: []Lease{
				assigned(lease("a", "10.244.1.0/24", 0, 0, 0)),
				lease("b", "10.244.1.0/24", grace+time.Second, 0, grace+time.Second),
			},
			alive: alive("b"),
			now:   grace / 2,
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a"}),
				Losers:   []Lease{lease("b", "10.244.1.0/24", grace+time.Second, 0, grace+time.Second)},
				Reserved: owners(map[string]string{"10.244.1.0/24": "a"}),
			},
		},
		{
			name: "same ms: lower ClaimedSeq wins",
			leases: []Lease{
				lease("a", "10.244.1.0/24", time.Second, 7, time.Second),
				lease("b", "10.244.1.0/24", time.Second, 3, time.Second),
			},
			alive: alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"b": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "b"}),
				Losers:   []Lease{lease("a", "10.244.1.0/24", time.Second, 7, time.Second)},
				Reserved: owners(nil),
			},
		},
		{
			name: "full tie: lower node name wins",
			leases: []Lease{
				lease("c", "10.244.1.0/24", time.Second, 1, time.Second),
				lease("b", "10.244.1.0/24", time.Second, 1, time.Second),
				lease("d", "10.244.1.0/24", time.Second, 1, time.Second),
			},
			alive: alive("b", "c", "d"),
			want: Table{
				ByNode: nodes(map[string]string{"b": "10.244.1.0/24"}),
				Owner:  owners(map[string]string{"10.244.1.0/24": "b"}),
				Losers: []Lease{
					lease("c", "10.244.1.0/24", time.Second, 1, time.Second),
					lease("d", "10.244.1.0/24", time.Second, 1, time.Second),
				},
				Reserved: owners(nil),
			},
		},
		{
			name: "several leases of one node: newest claim counts",
			leases: []Lease{
				lease("a", "10.244.1.0/24", time.Second, 0, time.Hour),
				lease("a", "10.244.5.0/24", 2*time.Second, 0, 2*time.Second),
				lease("b", "10.244.1.0/24", 3*time.Second, 0, 3*time.Second),
			},
			alive: alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.5.0/24", "b": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.5.0/24": "a", "10.244.1.0/24": "b"}),
				Reserved: owners(nil),
			},
		},
		{
			name: "dead node within grace: reserved, still wins",
			leases: []Lease{
				lease("dead", "10.244.1.0/24", 0, 0, 0),
				lease("b", "10.244.1.0/24", time.Minute, 0, time.Minute),
			},
			alive: alive("b"),
			now:   grace - time.Millisecond,
			want: Table{
				ByNode:   nodes(map[string]string{"dead": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "dead"}),
				Losers:   []Lease{lease("b", "10.244.1.0/24", time.Minute, 0, time.Minute)},
				Reserved: owners(map[string]string{"10.244.1.0/24": "dead"}),
			},
		},
		{
			name:   "dead node after grace: ignored",
			leases: []Lease{lease("dead", "10.244.1.0/24", 0, 0, time.Minute), lease("b", "10.244.2.0/24", 0, 0, 0)},
			alive:  alive("b"),
			now:    time.Minute + grace,
			want: Table{
				ByNode:   nodes(map[string]string{"b": "10.244.2.0/24"}),
				Owner:    owners(map[string]string{"10.244.2.0/24": "b"}),
				Reserved: owners(nil),
			},
		},
		{
			name:   "alive node with old renewal: active",
			leases: []Lease{lease("a", "10.244.1.0/24", 0, 0, 0)},
			alive:  alive("a"),
			now:    100 * grace,
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a"}),
				Reserved: owners(nil),
			},
		},
		{
			name: "lease whose node came back after its subnet was reused loses",
			leases: []Lease{
				lease("back", "10.244.1.0/24", 0, 0, time.Minute),
				lease("c", "10.244.1.0/24", time.Minute+grace, 0, 2*grace),
			},
			alive: alive("back", "c"),
			now:   2 * grace,
			want: Table{
				ByNode:   nodes(map[string]string{"c": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "c"}),
				Losers:   []Lease{lease("back", "10.244.1.0/24", 0, 0, time.Minute)},
				Reserved: owners(nil),
			},
		},
		{
			name: "claim made while the owner was still renewing does not supersede",
			leases: []Lease{
				lease("a", "10.244.1.0/24", 0, 0, 2*grace),
				lease("c", "10.244.1.0/24", time.Minute+grace, 0, 2*grace),
			},
			alive: alive("a", "c"),
			now:   2 * grace,
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a"}),
				Losers:   []Lease{lease("c", "10.244.1.0/24", time.Minute+grace, 0, 2*grace)},
				Reserved: owners(nil),
			},
		},
		{
			name: "overlap: earlier /23 beats /24 inside it",
			leases: []Lease{
				lease("big", "10.244.0.0/23", 0, 0, 0),
				lease("small", "10.244.1.0/24", time.Second, 0, time.Second),
				lease("other", "10.244.2.0/24", time.Second, 0, time.Second),
			},
			alive: alive("big", "small", "other"),
			want: Table{
				ByNode:   nodes(map[string]string{"big": "10.244.0.0/23", "other": "10.244.2.0/24"}),
				Owner:    owners(map[string]string{"10.244.0.0/23": "big", "10.244.2.0/24": "other"}),
				Losers:   []Lease{lease("small", "10.244.1.0/24", time.Second, 0, time.Second)},
				Reserved: owners(nil),
			},
		},
		{
			name: "overlap: earlier /24s beat /23 holding them; a loser blocks nothing",
			leases: []Lease{
				lease("s1", "10.244.0.0/24", 0, 0, 0),
				lease("big", "10.244.0.0/23", time.Second, 0, time.Second),
				lease("s2", "10.244.1.0/24", 2*time.Second, 0, 2*time.Second),
				lease("tiny", "10.244.0.128/25", 3*time.Second, 0, 3*time.Second),
			},
			alive: alive("s1", "big", "s2", "tiny"),
			want: Table{
				ByNode: nodes(map[string]string{"s1": "10.244.0.0/24", "s2": "10.244.1.0/24"}),
				Owner:  owners(map[string]string{"10.244.0.0/24": "s1", "10.244.1.0/24": "s2"}),
				Losers: []Lease{
					lease("big", "10.244.0.0/23", time.Second, 0, time.Second),
					lease("tiny", "10.244.0.128/25", 3*time.Second, 0, 3*time.Second),
				},
				Reserved: owners(nil),
			},
		},
		{
			name: "overlap across many lengths",
			leases: []Lease{
				lease("a", "10.244.0.0/26", 0, 0, 0),
				lease("b", "10.244.0.0/16", time.Second, 0, time.Second),
				lease("c", "10.245.0.0/16", 2*time.Second, 0, 2*time.Second),
				lease("d", "10.245.3.0/24", 3*time.Second, 0, 3*time.Second),
				lease("e", "10.244.0.64/26", 4*time.Second, 0, 4*time.Second),
			},
			alive: alive("a", "b", "c", "d", "e"),
			want: Table{
				ByNode: nodes(map[string]string{"a": "10.244.0.0/26", "c": "10.245.0.0/16", "e": "10.244.0.64/26"}),
				Owner:  owners(map[string]string{"10.244.0.0/26": "a", "10.245.0.0/16": "c", "10.244.0.64/26": "e"}),
				Losers: []Lease{
					lease("b", "10.244.0.0/16", time.Second, 0, time.Second),
					lease("d", "10.245.3.0/24", 3*time.Second, 0, 3*time.Second),
				},
				Reserved: owners(nil),
			},
		},
		{
			name:   "unmasked subnet is normalized",
			leases: []Lease{lease("a", "10.244.1.7/24", 0, 0, 0)},
			alive:  alive("a"),
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a"}),
				Reserved: owners(nil),
			},
		},
		{
			name:   "no node or no subnet: ignored",
			leases: []Lease{{Subnet: pfx("10.244.1.0/24")}, {Node: "a"}},
			alive:  alive("a"),
			want:   Table{ByNode: nodes(nil), Owner: owners(nil), Reserved: owners(nil)},
		},
		{
			name:   "ipv4 and ipv6 never conflict",
			leases: []Lease{lease("a", "10.244.1.0/24", 0, 0, 0), lease("b", "fd00::/64", time.Second, 0, time.Second)},
			alive:  alive("a", "b"),
			want: Table{
				ByNode:   nodes(map[string]string{"a": "10.244.1.0/24", "b": "fd00::/64"}),
				Owner:    owners(map[string]string{"10.244.1.0/24": "a", "fd00::/64": "b"}),
				Reserved: owners(nil),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Resolve(tt.leases, tt.alive, t0.Add(tt.now), grace)
			if diff := cmp.Diff(tt.want, got, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
			// The order of leases does not matter.
			r := rand.New(rand.NewPCG(1, 2))
			for range 5 {
				shuffled := append([]Lease(nil), tt.leases...)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				again := Resolve(shuffled, tt.alive, t0.Add(tt.now), grace)
				if diff := cmp.Diff(got, again, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("Resolve depends on order (-first +shuffled):\n%s", diff)
				}
			}
		})
	}
}

func TestResolveZeroGrace(t *testing.T) {
	// With no grace a dead node's lease is gone at once, and a later
	// claim never supersedes an alive node's lease.
	leases := []Lease{
		lease("dead", "10.244.1.0/24", 0, 0, 0),
		lease("a", "10.244.2.0/24", 0, 0, 0),
		lease("b", "10.244.2.0/24", time.Hour, 0, time.Hour),
	}
	got := Resolve(leases, alive("a", "b"), t0.Add(time.Minute), 0)
	want := Table{
		ByNode:   nodes(map[string]string{"a": "10.244.2.0/24"}),
		Owner:    owners(map[string]string{"10.244.2.0/24": "a"}),
		Losers:   []Lease{lease("b", "10.244.2.0/24", time.Hour, 0, time.Hour)},
		Reserved: owners(nil),
	}
	if diff := cmp.Diff(want, got, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
}

func TestLeaseJSON(t *testing.T) {
	l := lease("n1", "10.244.3.0/24", time.Second, 4, time.Minute)
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"node":"n1","subnet":"10.244.3.0/24","claimed":1700000001000,"claimedSeq":4,"renewed":1700000060000}`
	if string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var back Lease
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != l {
		t.Errorf("roundtrip = %+v, want %+v", back, l)
	}
}

func TestClaim(t *testing.T) {
	cidr := pfx("10.244.0.0/16")
	now := t0.Add(time.Hour)
	nowMs := now.UnixMilli()
	held := lease("n1", "10.244.9.0/24", 0, 0, 59*time.Minute)
	fresh, _ := PickFree(cidr, 24, table(), "n1")
	tests := []struct {
		name  string
		t     Table
		cur   Lease
		mask  int
		renew time.Duration
		want  Lease
		err   bool
	}{
		{name: "winner kept, not due", t: table("n1", "10.244.9.0/24"), cur: held, mask: 24, renew: 2 * time.Minute, want: held},
		{name: "winner kept and renewed", t: table("n1", "10.244.9.0/24"), cur: held, mask: 24, renew: time.Minute,
			want: Lease{Node: "n1", Subnet: pfx("10.244.9.0/24"), Claimed: held.Claimed, Renewed: nowMs}},
		{name: "no lease: new claim", t: table(), cur: Lease{Node: "n1"}, mask: 24,
			want: Lease{Node: "n1", Subnet: fresh, Claimed: nowMs, ClaimedSeq: 3, Renewed: nowMs}},
		{name: "lost: new claim elsewhere", t: table("n0", "10.244.9.0/24"), cur: held, mask: 24,
			want: Lease{Node: "n1", Subnet: fresh, Claimed: nowMs, ClaimedSeq: 3, Renewed: nowMs}},
		{name: "mask changed: new claim", t: table("n1", "10.244.9.0/24"), cur: held, mask: 25,
			want: func() Lease {
				p, _ := PickFree(cidr, 25, table("n1", "10.244.9.0/24"), "n1")
				return Lease{Node: "n1", Subnet: p, Claimed: nowMs, ClaimedSeq: 3, Renewed: nowMs}
			}()},
		{name: "full: cur unchanged with error", t: table("x", "10.244.0.0/16"), cur: held, mask: 24, want: held, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Claim(cidr, tt.mask, tt.t, tt.cur, now, 3, tt.renew)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got, cmpPrefix); diff != "" {
				t.Errorf("Claim (-want +got):\n%s", diff)
			}
		})
	}
}

// The sorting fast path for leases of one length decides exactly as the
// general, map based path.
func TestDecideOneLengthMatchesGeneral(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	sp := newSpace(pfx("10.244.0.0/16"), 24)
	sp6 := newSpace(pfx("fd00::/48"), 64)
	for iter := range 300 {
		n := 1 + r.IntN(60)
		var leases []Lease
		for i := range n {
			s := sp
			if r.IntN(4) == 0 {
				s = sp6
			}
			claimed := r.Int64N(int64(3 * grace / time.Millisecond))
			leases = append(leases, Lease{
				Node:       nodeName(i),
				Subnet:     s.subnet(uint64(r.IntN(8))),
				Claimed:    claimed,
				ClaimedSeq: uint32(r.IntN(2)),
				Renewed:    claimed + r.Int64N(int64(2*grace/time.Millisecond)),
				Assigned:   r.IntN(8) == 0,
			})
		}
		slices.SortFunc(leases, claimOrder)
		claims := make([]claim, len(leases))
		for i, l := range leases {
			claims[i] = claim{i: i, a: u128From(l.Subnet.Addr()), bits: l.Subnet.Bits(), v6: l.Subnet.Addr().Is6(), claimed: l.Claimed, renewed: max(l.Renewed, l.Claimed), assigned: l.Assigned}
		}
		graceMs := grace.Milliseconds()
		// lengths 24 and 64 are two lengths in different families: the
		// general path handles them as it would one.
		w1, l1 := decideOneLength(claims, graceMs)
		w2, l2 := decide(claims, []int{24, 64}, graceMs)
		slices.Sort(w1)
		slices.Sort(w2)
		slices.Sort(l1)
		slices.Sort(l2)
		if diff := cmp.Diff(w2, w1, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("iteration %d: winners (-general +fast):\n%s", iter, diff)
		}
		if diff := cmp.Diff(l2, l1, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("iteration %d: losers (-general +fast):\n%s", iter, diff)
		}
	}
}
