package ipam

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// LeaseKind is the store Kind of subnet leases. A lease is stored with
// Namespace "" and Name = node name; its value is the JSON of Lease.
const LeaseKind = "SubnetLease"

// Lease is one node's claim on a pod subnet.
type Lease struct {
	Node   string       `json:"node"`
	Subnet netip.Prefix `json:"subnet"`
	// Claimed is when the node first claimed Subnet (unix ms, HLC wall);
	// it does not change on renewal. ClaimedSeq orders claims made in the
	// same millisecond (HLC logical counter).
	Claimed    int64  `json:"claimed"`
	ClaimedSeq uint32 `json:"claimedSeq"`
	// Renewed is the last time the node confirmed the lease (unix ms).
	Renewed int64 `json:"renewed"`
	// Assigned: the cluster gave the node this subnet (a Kubernetes
	// Node's spec.podCIDR) rather than the node picking it. An assigned
	// lease wins over every overlapping picked one, whenever claimed, and
	// never lapses for one.
	Assigned bool `json:"assigned,omitempty"`
}

// Table is the agreed owner of every subnet, as computed by Resolve.
type Table struct {
	// ByNode maps each winning node, alive or reserved, to its subnet.
	ByNode map[string]netip.Prefix
	// Owner maps each won subnet to its node.
	Owner map[netip.Prefix]string
	// Losers are the active leases that lost to an earlier claim on the
	// same or an overlapping subnet, sorted by node name. Their nodes must
	// pick again.
	Losers []Lease
	// Reserved maps the subnets won by nodes that are not alive, within
	// grace, to their node. They are in Owner too.
	Reserved map[netip.Prefix]string
}

// newerLease reports whether a is a more recent lease of a node than b.
func newerLease(a, b Lease) bool {
	if c := cmp.Or(cmp.Compare(a.Claimed, b.Claimed), cmp.Compare(a.ClaimedSeq, b.ClaimedSeq), cmp.Compare(a.Renewed, b.Renewed)); c != 0 {
		return c > 0
	}
	return a.Subnet.String() < b.Subnet.String() // any fixed order
}

// claimOrder orders leases by claim: assigned ones first, then earliest
// (Claimed, ClaimedSeq), then the lower node name.
func claimOrder(a, b Lease) int {
	return cmp.Or(assignedFirst(a.Assigned, b.Assigned), cmp.Compare(a.Claimed, b.Claimed), cmp.Compare(a.ClaimedSeq, b.ClaimedSeq), cmp.Compare(a.Node, b.Node))
}

func assignedFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// Resolve computes who owns which subnet from all leases in the store, the
// set of alive node names, the current time and the grace during which a
// node that is not alive keeps its subnet (counted from its last renewal).
//
// Of several leases of one node only the newest (latest Claimed) counts.
// Leases without a node or a valid subnet are ignored, as are leases of
// nodes that are not alive once now >= Renewed+grace. Among the remaining,
// active leases, a lease whose subnet equals or overlaps the subnet of an
// earlier claim (see Lease.Claimed) loses. The result does not depend on
// the order of leases.
//
// One exception to "earliest claim wins": a lease that had lapsed (not
// renewed for grace) when another node claimed an overlapping subnet loses
// to that claim, also once its node is alive again. That later claim could
// only have been made because the subnet was free in the claimer's view, so
// a node that comes back after its subnet was given away picks a new one
// instead of taking it back from a node that uses it. Nodes must therefore
// renew their lease more often than grace (see Claim).
//
// Assigned leases (Lease.Assigned) come before every picked one: they win
// every overlap with a picked lease and never lapse. Among themselves
// (the cluster assigns no overlapping ones) the rules above apply.
func Resolve(leases []Lease, alive map[string]bool, now time.Time, grace time.Duration) Table {
	// The newest lease of each node: sort by node, newest first.
	all := make([]Lease, 0, len(leases))
	for _, l := range leases {
		if l.Node != "" {
			all = append(all, l)
		}
	}
	slices.SortFunc(all, func(a, b Lease) int {
		if c := cmp.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		switch {
		case newerLease(a, b):
			return -1
		case newerLease(b, a):
			return 1
		}
		return 0
	})
	nowMs, graceMs := now.UnixMilli(), grace.Milliseconds()
	active := make([]Lease, 0, len(all))
	var lengths []int // distinct prefix lengths among active leases
	prev := ""
	for _, l := range all {
		if l.Node == prev {
			continue // older lease of the same node
		}
		prev = l.Node
		if !l.Subnet.IsValid() {
			continue
		}
		if !alive[l.Node] && nowMs-l.Renewed >= graceMs {
			continue // expired
		}
		active = append(active, l)
		if !slices.Contains(lengths, l.Subnet.Bits()) {
			lengths = append(lengths, l.Subnet.Bits())
		}
	}
	slices.SortFunc(active, claimOrder)
	claims := make([]claim, len(active))
	for i, l := range active {
		p := l.Subnet.Masked()
		claims[i] = claim{i: i, a: u128From(p.Addr()), bits: p.Bits(), v6: p.Addr().Is6(), claimed: l.Claimed, renewed: max(l.Renewed, l.Claimed), assigned: l.Assigned}
	}

	var won, lost []int
	if len(lengths) == 1 {
		won, lost = decideOneLength(claims, graceMs)
	} else {
		won, lost = decide(claims, lengths, graceMs)
	}
	reserved := 0
	for _, i := range won {
		if !alive[active[i].Node] {
			reserved++
		}
	}
	t := Table{
		ByNode:   make(map[string]netip.Prefix, len(won)),
		Owner:    make(map[netip.Prefix]string, len(won)),
		Reserved: make(map[netip.Prefix]string, reserved),
	}
	for _, i := range won {
		l := active[i]
		p := l.Subnet.Masked()
		t.ByNode[l.Node] = p
		t.Owner[p] = l.Node
		if !alive[l.Node] {
			t.Reserved[p] = l.Node
		}
	}
	if len(lost) > 0 {
		t.Losers = make([]Lease, len(lost))
		for k, i := range lost {
			t.Losers[k] = active[i]
		}
		slices.SortFunc(t.Losers, func(a, b Lease) int { return cmp.Compare(a.Node, b.Node) })
	}
	return t
}

// claim is an active lease reduced to what decides (no pointers, so cheap
// to copy and sort). i is the lease's index in claim order.
type claim struct {
	i       int
	a       u128 // subnet address, masked
	bits    int
	v6      bool
	claimed int64
	renewed int64 // max(Renewed, Claimed)
	// assigned leases never lapse (see Lease.Assigned).
	assigned bool
}

// key returns the map key of the supernet of c's subnet of length n
// (n <= c.bits).
func (c claim) key(n int) pkey {
	width := 32
	if c.v6 {
		width = 128
	}
	h := uint(width - n)
	return pkey{a: c.a.shr(h).shl(h), bits: int16(n), v6: c.v6}
}

// pkey is a prefix as a map key without pointers: cheap to hash, no work
// for the garbage collector.
type pkey struct {
	a    u128
	bits int16
	v6   bool
}

// decide splits claims (sorted by claim) into the indexes of winners and
// losers: lapsed leases lose, then each remaining claim wins unless it
// overlaps an earlier winner.
func decide(claims []claim, lengths []int, graceMs int64) (won, lost []int) {
	won, lost = pickWinners(claims, lengths)
	if len(lost) > 0 {
		// Only leases in conflict can have lapsed.
		if stand, lapsed := dropLapsed(claims, lengths, graceMs); len(lapsed) > 0 {
			won, lost = pickWinners(stand, lengths)
			lost = append(lost, lapsed...)
		}
	}
	return won, lost
}

// decideOneLength is decide for claims whose subnets all have the same
// length, where overlapping means equal: it groups equal subnets by
// sorting instead of using maps.
func decideOneLength(claims []claim, graceMs int64) (won, lost []int) {
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, func(x, y claim) int {
		if x.v6 != y.v6 {
			if x.v6 {
				return 1
			}
			return -1
		}
		// Within a group of equal subnets keep claim order.
		return cmp.Or(cmp.Compare(x.a.hi, y.a.hi), cmp.Compare(x.a.lo, y.a.lo), cmp.Compare(x.i, y.i))
	})
	won = make([]int, 0, len(sorted))
	for i := 0; i < len(sorted); {
		j := i + 1
		latest := sorted[i].claimed
		for ; j < len(sorted) && sorted[j].v6 == sorted[i].v6 && sorted[j].a == sorted[i].a; j++ {
			latest = max(latest, sorted[j].claimed)
		}
		winner := false
		for _, c := range sorted[i:j] {
			switch {
			case j-i > 1 && graceMs > 0 && !c.assigned && latest-c.renewed >= graceMs:
				lost = append(lost, c.i) // lapsed
			case !winner:
				won = append(won, c.i)
				winner = true
			default:
				lost = append(lost, c.i)
			}
		}
		i = j
	}
	return won, lost
}

// pickWinners walks claims (sorted by claim) and keeps each whose subnet
// overlaps no subnet kept before; the others lose.
func pickWinners(claims []claim, lengths []int) (won, lost []int) {
	won = make([]int, 0, len(claims))
	// taken holds the won subnets; covered, for each won subnet, its
	// supernets at the lengths in use. A candidate contains a won subnet
	// iff it is in covered, and a won subnet contains the candidate iff
	// the candidate's supernet at that length is in taken.
	taken := make(map[pkey]struct{}, len(claims))
	covered := make(map[pkey]struct{}, len(claims))
	for _, c := range claims {
		self := c.key(c.bits)
		_, conflict := covered[self]
		for _, n := range lengths {
			if conflict {
				break
			}
			if n <= c.bits {
				_, conflict = taken[c.key(n)]
			}
		}
		if conflict {
			lost = append(lost, c.i)
			continue
		}
		won = append(won, c.i)
		taken[self] = struct{}{}
		for _, n := range lengths {
			if n < c.bits {
				covered[c.key(n)] = struct{}{}
			}
		}
	}
	return won, lost
}

// dropLapsed splits active (sorted by claim) into the leases that stand and
// those that lapsed before an overlapping lease was claimed: x lapsed if
// some other active lease y, whose subnet overlaps x's, has
// y.Claimed >= max(x.Renewed, x.Claimed)+grace. With grace <= 0 nothing
// lapses (every later claim would supersede).
func dropLapsed(active []claim, lengths []int, graceMs int64) (stand []claim, lapsed []int) {
	if graceMs <= 0 || len(active) < 2 {
		return active, nil
	}
	// within[p] = latest Claimed among leases whose subnet is inside p
	// (or equal), for p of the lengths in use; exact[p] = latest Claimed
	// among leases of exactly p.
	within := make(map[pkey]int64, len(active))
	exact := make(map[pkey]int64, len(active))
	for _, c := range active {
		self := c.key(c.bits)
		if v, ok := exact[self]; !ok || c.claimed > v {
			exact[self] = c.claimed
		}
		for _, n := range lengths {
			if n > c.bits {
				continue
			}
			k := c.key(n)
			if v, ok := within[k]; !ok || c.claimed > v {
				within[k] = c.claimed
			}
		}
	}
	stand = make([]claim, 0, len(active))
	for _, c := range active {
		// The latest claim overlapping c: inside (or equal to) c's
		// subnet, or holding it. c itself is among them but cannot
		// supersede itself: c.claimed <= c.renewed < c.renewed + grace.
		latest := within[c.key(c.bits)]
		for _, n := range lengths {
			if n >= c.bits {
				continue
			}
			if v, ok := exact[c.key(n)]; ok && v > latest {
				latest = v
			}
		}
		if !c.assigned && latest-c.renewed >= graceMs {
			lapsed = append(lapsed, c.i)
			continue
		}
		stand = append(stand, c)
	}
	return stand, lapsed
}

// Renew is l with Renewed set to now when renew has passed since it was
// last renewed (renew <= 0 renews every time), else l unchanged.
func Renew(l Lease, now time.Time, renew time.Duration) Lease {
	if nowMs := now.UnixMilli(); nowMs-l.Renewed >= renew.Milliseconds() {
		l.Renewed = nowMs
	}
	return l
}

// Claim decides the lease node cur.Node should hold after t was resolved
// (cur is the node's current lease as given to Resolve, or a Lease with
// only Node set when it has none):
//
//   - if cur still wins in t with a /mask subnet inside cidr, cur is kept;
//     its Renewed is set to now when renew has passed since the last
//     renewal (renew <= 0 renews every time). renew must be shorter than
//     the grace given to Resolve;
//   - otherwise a new lease on PickFree's subnet is returned, claimed at
//     now with seq as ClaimedSeq.
//
// The caller writes the result to the store when it differs from cur. On
// error (ErrFull or a bad mask) cur is returned unchanged with the error;
// a lease that lost should then be withdrawn by the caller.
func Claim(cidr netip.Prefix, mask int, t Table, cur Lease, now time.Time, seq uint32, renew time.Duration) (Lease, error) {
	nowMs := now.UnixMilli()
	if own, ok := t.ByNode[cur.Node]; ok && own == cur.Subnet && fits(cidr.Masked(), mask, own) {
		return Renew(cur, now, renew), nil
	}
	p, err := PickFree(cidr, mask, t, cur.Node)
	if err != nil {
		return cur, err
	}
	return Lease{Node: cur.Node, Subnet: p, Claimed: nowMs, ClaimedSeq: seq, Renewed: nowMs}, nil
}
