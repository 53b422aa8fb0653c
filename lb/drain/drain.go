package drain

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
)

// Defaults of Config.
const (
	// DefaultTimeout is how long a new owner forwards the old owner's
	// connections, and how long a leaving node waits for its own to end.
	DefaultTimeout = 30 * time.Second
	// DefaultDeadTimeout bounds a drain from a node that failed (the
	// agent's --peer-grace: after it the others drop its WireGuard peer,
	// which its forwarded connections need anyway).
	DefaultDeadTimeout = 15 * time.Second
)

// MaxSlots is how many old owners can be drained from at once.
const MaxSlots = 255

// Config times the drains.
type Config struct {
	// Timeout is how long a drain lasts at most (DefaultTimeout when 0;
	// negative: no drains).
	Timeout time.Duration
	// DeadTimeout ends a drain from a node that failed this long after the
	// drain began (DefaultDeadTimeout when 0).
	DeadTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DeadTimeout == 0 {
		c.DeadTimeout = DefaultDeadTimeout
	}
	return c
}

// Member is what a drain needs to know of a node.
type Member struct {
	// Addr is the node's address on the LAN (its advertise address).
	Addr netip.Addr
	// State is the member state (mesh.StateAlive...).
	State string
}

// Input is what one Step decides from.
type Input struct {
	Self string
	// Owners maps each VIP to its owner now.
	Owners map[netip.Addr]string
	// Fallback maps each VIP to the node that would own it without Self;
	// it is read only at the first step, when there are no previous owners
	// (nil otherwise is fine).
	Fallback map[netip.Addr]string
	// Members are every node known, by name, dead and left ones included.
	Members map[string]Member
	Now     time.Time
}

// Drain is one VIP whose connections this node forwards to the node that
// owned it before.
type Drain struct {
	VIP netip.Addr
	// From is the old owner, Via its address.
	From string
	Via  netip.Addr
	// Since is when this node took the VIP over; Until when the drain ends
	// at the latest.
	Since, Until time.Time
	// Returned is set while the old owner owns the VIP again: the flows
	// this node already forwards to it go on being forwarded (clients
	// whose ARP entry has not moved back yet still send here), but no new
	// ones are taken up, or a flow neither node knows would go back and
	// forth between them, each draining from the other.
	Returned bool
}

// State is the result of a Step, and the input of the next.
type State struct {
	// Owners are the VIP owners of the last step (nil before the first).
	Owners map[netip.Addr]string
	// Drains are the live drains, by VIP.
	Drains map[netip.Addr]Drain
	// Slots give every old owner of a live drain its slot (1..MaxSlots).
	Slots map[string]uint32
}

// Mark is the firewall mark of a slot.
func Mark(slot uint32) uint32 { return slot << markShift & MarkMask }

// Equal reports whether two states program the same kernel state and
// expire at the same times (Owners aside).
func (s State) Equal(o State) bool {
	return maps.Equal(s.Drains, o.Drains) && maps.Equal(s.Slots, o.Slots)
}

// Step computes the next state from the previous one: drains start for
// the VIPs Self took over from another node and end as the package
// documentation says. It is pure.
func Step(cfg Config, prev State, in Input) State {
	cfg = cfg.withDefaults()
	next := State{Owners: maps.Clone(in.Owners), Drains: map[netip.Addr]Drain{}, Slots: map[string]uint32{}}
	if next.Owners == nil {
		next.Owners = map[netip.Addr]string{}
	}
	if cfg.Timeout < 0 {
		return next
	}
	for vip, d := range prev.Drains {
		if keep(cfg, d, in) {
			d.Returned = in.Owners[vip] == d.From
			next.Drains[vip] = d
		}
	}
	for vip, owner := range in.Owners {
		if owner != in.Self || !vip.Is4() {
			continue
		}
		var was string
		if prev.Owners != nil {
			was = prev.Owners[vip]
		} else {
			was = in.Fallback[vip]
		}
		if was == "" || was == in.Self {
			continue
		}
		if d, ok := next.Drains[vip]; ok && d.From == was && !prev.Drains[vip].Returned {
			continue
		}
		m, ok := in.Members[was]
		if !ok || !m.Addr.Is4() || m.State == mesh.StateLeft {
			continue
		}
		d := Drain{VIP: vip, From: was, Via: m.Addr, Since: in.Now, Until: in.Now.Add(cfg.Timeout)}
		if keep(cfg, d, in) {
			next.Drains[vip] = d
		}
	}
	// Slots: an old owner keeps its slot while a drain from it lives; a
	// new one gets the lowest free slot (no slot: no drain).
	var froms []string
	for _, d := range next.Drains {
		if !slices.Contains(froms, d.From) {
			froms = append(froms, d.From)
		}
	}
	slices.Sort(froms)
	used := map[uint32]bool{}
	for _, f := range froms {
		if s, ok := prev.Slots[f]; ok {
			next.Slots[f] = s
			used[s] = true
		}
	}
	free := uint32(1)
	for _, f := range froms {
		if _, ok := next.Slots[f]; ok {
			continue
		}
		for free <= MaxSlots && used[free] {
			free++
		}
		if free > MaxSlots {
			for vip, d := range next.Drains {
				if d.From == f {
					delete(next.Drains, vip)
				}
			}
			continue
		}
		next.Slots[f], used[free] = free, true
	}
	return next
}

// keep reports whether drain d still lives for in.
func keep(cfg Config, d Drain, in Input) bool {
	m, ok := in.Members[d.From]
	switch {
	case !in.Now.Before(d.Until):
		return false
	case !ok || m.State == mesh.StateLeft:
		// Gone gracefully: its data plane went with it.
		return false
	case m.State == mesh.StateDead && !in.Now.Before(d.Since.Add(cfg.DeadTimeout)):
		return false
	}
	return true
}

// Next is when a drain of s ends by time at the latest (zero when none
// does): the next Step due without a new snapshot.
func Next(cfg Config, s State, members map[string]Member) time.Time {
	cfg = cfg.withDefaults()
	var next time.Time
	for _, d := range s.Drains {
		t := d.Until
		if m, ok := members[d.From]; ok && m.State == mesh.StateDead {
			if dt := d.Since.Add(cfg.DeadTimeout); dt.Before(t) {
				t = dt
			}
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// Freed are the slots of prev that next no longer uses: the conntrack
// entries marked with them are to be deleted.
func Freed(prev, next State) []uint32 {
	inUse := map[uint32]bool{}
	for _, s := range next.Slots {
		inUse[s] = true
	}
	var out []uint32
	for _, s := range prev.Slots {
		if !inUse[s] {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Members are the members of a snapshot as Step needs them.
func Members(s *cluster.Snapshot) map[string]Member {
	out := make(map[string]Member, len(s.Members))
	for _, m := range s.Members {
		addr := m.Addr
		if a, err := netip.ParseAddr(m.Meta.Addr); err == nil {
			addr = a
		}
		out[m.Name] = Member{Addr: addr.Unmap(), State: m.State}
	}
	return out
}

// InputOf is the input of node self's step for snapshot s at now; the
// fallback owners are computed only when first is set.
func InputOf(self string, s *cluster.Snapshot, now time.Time, first bool) Input {
	in := Input{Self: self, Members: Members(s), Now: now}
	if s.LB == nil {
		return in
	}
	in.Owners = s.LB.Owners
	if first {
		others := maps.Clone(s.LB.Candidates)
		delete(others, self)
		in.Fallback = lb.Owners(s.Services, s.LB.Plan.Results, others, s.LB.Endpoints)
	}
	return in
}

// Tracker runs Step over the snapshots of one agent.
type Tracker struct {
	cfg   Config
	st    State
	first bool
}

// NewTracker returns a tracker that has seen no snapshot.
func NewTracker(cfg Config) *Tracker { return &Tracker{cfg: cfg.withDefaults(), first: true} }

// Update steps with snapshot s at now (only snapshots in which this node
// has heard the cluster count) and returns the slots it freed; changed
// reports whether the drains or slots changed.
func (t *Tracker) Update(self string, s *cluster.Snapshot, now time.Time) (freed []uint32, changed bool) {
	if !s.Node.Joined || s.LB == nil {
		return nil, false
	}
	next := Step(t.cfg, t.st, InputOf(self, s, now, t.first))
	t.first = false
	freed, changed = Freed(t.st, next), !next.Equal(t.st)
	t.st = next
	return freed, changed
}

// State is the tracker's current state.
func (t *Tracker) State() State { return t.st }

// Next is when the tracker must step again without a new snapshot (zero:
// no need).
func (t *Tracker) Next(s *cluster.Snapshot) time.Time {
	return Next(t.cfg, t.st, Members(s))
}
