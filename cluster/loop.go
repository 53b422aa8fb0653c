package cluster

import (
	"context"
	"log/slog"
	"time"
)

// Controller is one room of the agent: each pass takes a snapshot,
// computes the room's desired state (pure) and hands it to the room's
// applier. A pass may be called again with the same snapshot: appliers
// make the same state twice a no-op.
type Controller interface {
	// Pass brings the room's state in line with s. With repair set it also
	// re-reads the kernel state it owns and restores whatever differs
	// (someone changed it by hand). worked is false when there was nothing
	// to do (such passes are not timed).
	Pass(ctx context.Context, s *Snapshot, repair bool) (worked bool, err error)
}

// LoopOptions time a Loop.
type LoopOptions struct {
	// Name names the room in logs and metrics.
	Name string
	// MinInterval is the least time between two passes (default 100ms).
	MinInterval time.Duration
	// Every runs a pass at least this often even without a new snapshot
	// (0: never).
	Every time.Duration
	// Repair runs a repair pass this often (0: never).
	Repair time.Duration
	// Retry is the first delay before a failed pass runs again; it doubles
	// up to 10s while passes keep failing (default 500ms).
	Retry time.Duration
	// Observe receives the duration and result of every pass that worked
	// or failed.
	Observe func(room string, d time.Duration, err error)
	// Log receives failed passes (default: slog.Default()).
	Log *slog.Logger
}

// Loop runs one controller: a pass after each new snapshot of its Hub (at
// most one per MinInterval), after Kick, every Every, a repair pass every
// Repair, and again after a failure with backoff.
type Loop struct {
	hub  *Hub
	c    Controller
	o    LoopOptions
	kick chan struct{}
	fix  chan struct{}
	sub  <-chan struct{}
}

// NewLoop prepares a loop of c fed by hub; Run runs it. It subscribes to
// the hub at once, so no snapshot published after NewLoop is missed.
func NewLoop(hub *Hub, c Controller, o LoopOptions) *Loop {
	if o.MinInterval <= 0 {
		o.MinInterval = 100 * time.Millisecond
	}
	if o.Retry <= 0 {
		o.Retry = 500 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Loop{hub: hub, c: c, o: o, kick: make(chan struct{}, 1), fix: make(chan struct{}, 1), sub: hub.Subscribe()}
}

// Kick asks for a pass soon (it never blocks).
func (l *Loop) Kick() { signal(l.kick) }

// KickRepair asks for a repair pass soon (it never blocks).
func (l *Loop) KickRepair() { signal(l.fix) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run runs passes until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	var every, repair <-chan time.Time
	if l.o.Every > 0 {
		t := time.NewTicker(l.o.Every)
		defer t.Stop()
		every = t.C
	}
	if l.o.Repair > 0 {
		t := time.NewTicker(l.o.Repair)
		defer t.Stop()
		repair = t.C
	}
	retry := l.o.Retry
	var retryC <-chan time.Time
	fix := true // the first pass compares with what the kernel holds
	for {
		start := time.Now()
		worked, err := l.c.Pass(ctx, l.hub.Latest(), fix)
		if ctx.Err() != nil {
			return nil
		}
		// After a failure the applier's idea of the kernel is not trusted:
		// the next pass, whatever wakes it, compares with the kernel again.
		fix = err != nil
		if (worked || err != nil) && l.o.Observe != nil {
			l.o.Observe(l.o.Name, time.Since(start), err)
		}
		if err != nil {
			l.o.Log.Warn("pass failed; retrying", "room", l.o.Name, "in", retry, "err", err)
			retryC = time.After(retry)
			retry = min(2*retry, 10*time.Second)
		} else {
			retryC, retry = nil, l.o.Retry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.sub:
		case <-l.kick:
		case <-every:
		case <-retryC:
		case <-repair:
			fix = true
		case <-l.fix:
			fix = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.o.MinInterval - min(time.Since(start), l.o.MinInterval)):
		}
	}
}
