package fwctl

import (
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/nft"
)

// DrainKernel is the kernel side of the VIP drains (lb/drain's Kernel):
// their policy routing, and the conntrack entries of ended drains.
type DrainKernel interface {
	// Set makes the drains' routing routes (prune: also delete the rest).
	Set(routes []drain.Route, prune bool) error
	// Flush deletes the conntrack entries marked with the slots.
	Flush(slots []uint32) (uint, error)
}

// drains is the controller's part of the VIP drains (lb/drain): the
// tracker stepped on every pass, and what is left to do in the kernel.
type drains struct {
	tracker *drain.Tracker
	gen     uint64   // counts changes of the tracker's drains and slots
	flush   []uint32 // freed slots whose conntrack entries are not yet deleted
	next    time.Time
	lastErr string
}

// stepDrains steps the tracker with s and schedules the pass at which the
// next drain ends.
func (c *Controller) stepDrains(s *cluster.Snapshot) {
	if c.Drains == nil {
		return
	}
	d := &c.drain
	if d.tracker == nil {
		d.tracker = drain.NewTracker(c.cfg.Drain)
	}
	freed, changed := d.tracker.Update(c.cfg.Name, s, c.cfg.Now())
	d.flush = append(d.flush, freed...)
	if changed {
		d.gen++
		st := d.tracker.State()
		for vip, dr := range st.Drains {
			c.cfg.Log.Debug("VIP drain", "vip", vip, "from", dr.From, "via", dr.Via, "until", dr.Until)
		}
		c.cfg.Log.Info("VIP drains", "drains", len(st.Drains), "oldOwners", len(st.Slots))
	}
	if next := d.tracker.Next(s); !next.IsZero() && !next.Equal(d.next) && c.After != nil {
		d.next = next
		c.After(next.Sub(c.cfg.Now()) + 10*time.Millisecond)
	}
}

// drainFragment is the drains' part of the table.
func (c *Controller) drainFragment() nft.Model {
	if c.Drains == nil || c.drain.tracker == nil {
		return nft.Model{}
	}
	return drain.Fragment(c.drain.tracker.State())
}

// drainRoutes programs the drains' routing: before the table is applied
// (prune unset: only additions) and after it (prune set, and the
// conntrack entries of ended drains deleted). Failures are logged, not
// returned: a drain that cannot be routed (its old owner is not on-link)
// must not hold the firewall back.
func (c *Controller) drainRoutes(prune bool) {
	if c.Drains == nil || c.drain.tracker == nil {
		return
	}
	d := &c.drain
	err := c.Drains.Set(drain.Routes(d.tracker.State()), prune)
	if err != nil && err.Error() != d.lastErr {
		c.cfg.Log.Warn("VIP drain routing", "err", err)
	}
	if err != nil {
		d.lastErr = err.Error()
	} else {
		d.lastErr = ""
	}
	if !prune || len(d.flush) == 0 {
		return
	}
	if n, err := c.Drains.Flush(d.flush); err != nil {
		c.cfg.Log.Warn("VIP drain: delete conntrack entries of ended drains", "err", err)
	} else {
		c.cfg.Log.Info("VIP drains ended", "slots", d.flush, "conntrackEntries", n)
		d.flush = nil
	}
}
