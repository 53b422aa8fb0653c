// Package lbctl is the load-balancing room's controller: it records the
// addresses this node is the writer of, announces the VIPs this node owns,
// notes conflicts and failovers, and publishes the VIPs and service issues
// for status.
package lbctl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/node/events"
)

// Announcer answers ARP for the VIPs this node owns.
type Announcer interface {
	// SetOwned makes vips the owned set (the same set twice is a no-op).
	SetOwned(vips []netip.Addr)
	// Reannounce sends gratuitous ARP for every owned VIP again.
	Reannounce()
}

// Assignments is where addresses are recorded (the store).
type Assignments interface {
	// Record writes puts and deletes dels in one change.
	Record(puts map[lb.ServiceKey]lb.Assignment, dels []lb.ServiceKey) error
	// Deleted lists the services that have a recorded assignment but
	// were deleted. A service whose object has not arrived yet is not
	// deleted: its record must stay.
	Deleted() []lb.ServiceKey
}

// Hooks count what happened (metrics); nil fields are skipped.
type Hooks struct {
	Conflict func()
	Failover func()
}

// Config configures a Controller.
type Config struct {
	Name string
	Now  func() time.Time
	Log  *slog.Logger
	// Settle is how long a write for a service another member created
	// waits (see Held); zero means DefaultSettle.
	Settle time.Duration
}

// DefaultSettle is one push/pull interval of the default gossip timers:
// a record that gossip lost reaches every member by then.
const DefaultSettle = 15 * time.Second

// ConflictMemory is how long status keeps showing a resolved conflict.
const ConflictMemory = 24 * time.Hour

// Controller drives announcement and records assignments.
type Controller struct {
	cfg    Config
	an     Announcer
	as     Assignments
	events events.Sink
	hooks  Hooks

	again atomic.Bool

	// After, when set, is asked to kick the loop after d: a held write is
	// due then.
	After func(d time.Duration)

	// Only passes touch these.
	prev      *cluster.LB
	recorded  *cluster.LB // the state whose assignments were recorded
	conflicts map[lb.ServiceKey]Conflict
	held      map[lb.ServiceKey]time.Time // writes held back, since when

	status atomic.Pointer[Status]
}

// Conflict is an address a service lost, and when.
type Conflict struct {
	Text string
	At   time.Time
}

// Status is what the room publishes after each pass.
type Status struct {
	// Snapshot is the snapshot of the pass.
	Snapshot *cluster.Snapshot
	// Owned are the VIPs this node announces.
	Owned []netip.Addr
	// Conflicts are the address conflicts services lost in the last
	// ConflictMemory.
	Conflicts map[lb.ServiceKey]Conflict
}

// New returns a controller.
func New(cfg Config, an Announcer, as Assignments, ev events.Sink, hooks Hooks) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	c := &Controller{cfg: cfg, an: an, as: as, events: ev, hooks: hooks, conflicts: map[lb.ServiceKey]Conflict{}}
	c.status.Store(&Status{})
	return c
}

// Status is the newest published status (never nil).
func (c *Controller) Status() *Status { return c.status.Load() }

// Reannounce asks the next pass to send gratuitous ARP for every owned VIP
// (a member joined: it may have been on the other side of a partition,
// where clients learned another owner). Kick the loop after it.
func (c *Controller) Reannounce() { c.again.Store(true) }

// Owned are the VIPs node self announces for snapshot s: the ones it owns,
// once it has heard the cluster (before, it would rank itself first for
// every VIP) and while it is not leaving.
func Owned(self string, s *cluster.Snapshot) []netip.Addr {
	var out []netip.Addr
	if !s.Node.Joined || s.Node.Leaving || s.LB == nil {
		return out
	}
	for vip, owner := range s.LB.Owners {
		if owner == self {
			out = append(out, vip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Writes are the assignments node self records for snapshot s, and the
// recorded ones it deletes (of the deleted services among deleted that s
// does not hold again; the lowest candidate does that). Nothing before the
// node has heard the cluster: a partial store would record addresses that
// then move.
func Writes(self string, s *cluster.Snapshot, deleted []lb.ServiceKey) (puts map[lb.ServiceKey]lb.Assignment, dels []lb.ServiceKey) {
	if !s.Node.Joined || s.LB == nil {
		return nil, nil
	}
	for _, w := range s.LB.Plan.Writes {
		if w.Writer != self {
			continue
		}
		if puts == nil {
			puts = map[lb.ServiceKey]lb.Assignment{}
		}
		puts[w.Service] = w.Assignment
	}
	if lowest(s.LB.Candidates) == self {
		for _, k := range deleted {
			if _, ok := s.LB.Plan.Results[k]; !ok {
				dels = append(dels, k)
			}
		}
	}
	return puts, dels
}

// Held are the writes among puts that node self makes for another member:
// services created by a member of the cluster that is not a candidate.
// Such a write waits (Config.Settle) before it is made. After a partition
// heals, the creator's service and its record arrive as separate gossip
// messages, and its member state later still: a node that has the service
// but not yet its record, and does not yet see the creator alive, would
// otherwise record a fresh address that, being the newest write, replaces
// the record on every node, and the older service would lose its address
// to the younger one it conflicted with. Once the record arrives the
// write is no longer in the plan. Services not created by a member (in
// Kubernetes mode the creator is the object's UID) are not held: their
// writer is always the lowest candidate.
func Held(self string, s *cluster.Snapshot, puts map[lb.ServiceKey]lb.Assignment) []lb.ServiceKey {
	if len(puts) == 0 {
		return nil
	}
	members := make(map[string]bool, len(s.Members))
	for _, m := range s.Members {
		members[m.Name] = true
	}
	var out []lb.ServiceKey
	for _, svc := range s.Services {
		creator := svc.Created.Node
		if _, ok := puts[svc.Key()]; ok && creator != self && members[creator] {
			out = append(out, svc.Key())
		}
	}
	slices.SortFunc(out, lb.ServiceKey.Compare)
	return out
}

func lowest(set map[string]bool) string {
	names := make([]string, 0, len(set))
	for n, ok := range set {
		if ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// Pass implements cluster.Controller.
func (c *Controller) Pass(ctx context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	st := s.LB
	if st == nil {
		return false, nil
	}
	var err error
	worked := false
	if s.Node.Joined && c.recorded != st {
		puts, dels := Writes(c.cfg.Name, s, c.as.Deleted())
		waiting := c.hold(s, puts)
		if len(puts)+len(dels) > 0 {
			worked = true
			if err = c.as.Record(puts, dels); err != nil {
				err = fmt.Errorf("record service addresses: %w", err)
			} else {
				c.logWrites(s, puts, dels)
			}
		}
		if err == nil && !waiting {
			c.recorded = st
		}
	}
	if c.prev != st {
		c.note(s)
		c.prev = st
		worked = true
	}
	owned := Owned(c.cfg.Name, s)
	c.an.SetOwned(owned)
	if c.again.Swap(false) {
		c.an.Reannounce()
	}
	c.status.Store(&Status{Snapshot: s, Owned: owned, Conflicts: c.conflictsCopy()})
	return worked, err
}

// hold takes out of puts the held writes (Held) that have not waited
// Settle yet, and reports whether any is left waiting. The loop is kicked
// when a write held first in this pass is due.
func (c *Controller) hold(s *cluster.Snapshot, puts map[lb.ServiceKey]lb.Assignment) bool {
	now := c.cfg.Now()
	held := Held(c.cfg.Name, s, puts)
	still := make(map[lb.ServiceKey]time.Time, len(held)) // the rest are written, or no longer wanted
	waiting, fresh := false, false
	for _, k := range held {
		since, ok := c.held[k]
		if !ok {
			since, fresh = now, true
			c.cfg.Log.Debug("holding back a write for a service another member created", "service", k.String(), "for", c.cfg.Settle)
		}
		still[k] = since
		if now.Sub(since) < c.cfg.Settle {
			delete(puts, k)
			waiting = true
		}
	}
	c.held = still
	if fresh && c.After != nil {
		c.After(c.cfg.Settle)
	}
	return waiting
}

// logWrites logs (at debug level) the addresses this node recorded.
func (c *Controller) logWrites(s *cluster.Snapshot, puts map[lb.ServiceKey]lb.Assignment, dels []lb.ServiceKey) {
	if !c.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, svc := range s.Services {
		if a, ok := puts[svc.Key()]; ok {
			c.cfg.Log.Debug("recorded service addresses", "service", svc.Key().String(), "vip", a.VIP, "clusterIP", a.ClusterIP,
				"was", svc.Assigned.VIP, "created", svc.Created.Node, "candidates", len(s.LB.Candidates))
		}
	}
	for _, k := range dels {
		c.cfg.Log.Debug("deleted the addresses of a deleted service", "service", k.String())
	}
}

func (c *Controller) conflictsCopy() map[lb.ServiceKey]Conflict {
	out := make(map[lb.ServiceKey]Conflict, len(c.conflicts))
	for k, v := range c.conflicts {
		out[k] = v
	}
	return out
}

// note logs and records VIP conflicts and owner changes.
func (c *Controller) note(s *cluster.Snapshot) {
	st, now := s.LB, c.cfg.Now()
	var prevPlan lb.Plan
	var prevOwners map[netip.Addr]string
	if c.prev != nil {
		prevPlan, prevOwners = c.prev.Plan, c.prev.Owners
	}
	exists := make(map[lb.ServiceKey]bool, len(s.Services))
	for _, svc := range s.Services {
		k := svc.Key()
		exists[k] = true
		r, old := st.Plan.Results[k], prevPlan.Results[k]
		if r.Conflict != "" && r.Conflict != old.Conflict {
			c.cfg.Log.Warn("service address conflict", "service", k.String(), "conflict", r.Conflict)
			c.events.Add(events.VIPConflict, k.String(), "service "+k.String()+": "+r.Conflict)
			if c.hooks.Conflict != nil {
				c.hooks.Conflict()
			}
			c.conflicts[k] = Conflict{Text: r.Conflict, At: now}
		}
		if r.Pending != "" && r.Pending != old.Pending {
			c.cfg.Log.Warn("service pending", "service", k.String(), "reason", r.Pending)
		}
	}
	for k, cf := range c.conflicts {
		if !exists[k] || now.Sub(cf.At) > ConflictMemory {
			delete(c.conflicts, k)
		}
	}
	for vip, owner := range st.Owners {
		if was, had := prevOwners[vip]; had && was != owner {
			c.cfg.Log.Info("VIP moved", "vip", vip, "from", was, "to", owner)
			c.events.Add(events.VIPFailover, vip.String(), fmt.Sprintf("VIP %s moved from %s to %s", vip, was, owner))
			if c.hooks.Failover != nil {
				c.hooks.Failover()
			}
		}
	}
}
