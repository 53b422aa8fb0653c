package mesh

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Rejoiner decides when to call members that failed. memberlist never
// probes a dead member again, so after a partition heals each side would go
// on believing the other dead, each announcing its own VIPs, until someone
// restarted an agent. Like Serf, netloom keeps calling failed members (not
// those that left) at their last known gossip address, and the --join
// addresses while any member is failed, each target backing off from Min
// to Max; a target whose member is alive again starts over at Min.
type Rejoiner struct {
	Min, Max time.Duration
	tries    map[string]attempt
}

type attempt struct {
	at   time.Time     // when the target may be called next
	wait time.Duration // the backoff after that call
}

// Due returns the addresses to call at now, given the members (self
// included) and the --join addresses, and records the calls.
func (r *Rejoiner) Due(now time.Time, members []Member, join []string) []string {
	if r.tries == nil {
		r.tries = map[string]attempt{}
	}
	var failed []string
	self := ""
	for _, m := range members {
		if m.Self {
			self = gossipAddr(m)
			continue
		}
		if m.State == StateDead && m.Addr.IsValid() {
			failed = append(failed, gossipAddr(m))
		}
	}
	targets := failed
	if len(failed) > 0 {
		for _, j := range join {
			if j != "" && j != self && !slices.Contains(targets, j) {
				targets = append(targets, j)
			}
		}
	}
	// Targets that are not wanted any more (their member is back, or
	// left) start over at Min next time.
	for t := range r.tries {
		if !slices.Contains(targets, t) {
			delete(r.tries, t)
		}
	}
	var due []string
	for _, t := range targets {
		a, seen := r.tries[t]
		if seen && now.Before(a.at) {
			continue
		}
		wait := r.Min
		if seen {
			wait = min(2*a.wait, r.Max)
		}
		r.tries[t] = attempt{at: now.Add(wait), wait: wait}
		due = append(due, t)
	}
	slices.Sort(due)
	return due
}

func gossipAddr(m Member) string {
	addr := m.Addr
	if a, err := netip.ParseAddr(m.Meta.Addr); err == nil {
		addr = a
	}
	return net.JoinHostPort(addr.String(), strconv.Itoa(m.Port))
}

// RunRejoin calls failed members (see Rejoiner) until ctx ends. join are
// the --join addresses. Each target is called on its own, so that a call
// that hangs in TCP connect (the path is still down) delays no other; a
// target with a call in flight is not called again until it returns. The
// backoff stops at 4 s, so that a healed partition merges within seconds.
func (m *Membership) RunRejoin(ctx context.Context, join []string) error {
	r := &Rejoiner{Min: time.Second, Max: 4 * time.Second}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var mu sync.Mutex
	inFlight := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, target := range r.Due(time.Now(), m.Members(), join) {
			mu.Lock()
			busy := inFlight[target]
			inFlight[target] = true
			mu.Unlock()
			if busy {
				continue
			}
			go func() {
				n, err := m.Join([]string{target})
				if n > 0 {
					m.log.Info("called a failed member again", "target", target)
				} else {
					m.log.Debug("failed member still unreachable", "target", target, "err", err)
				}
				mu.Lock()
				delete(inFlight, target)
				mu.Unlock()
			}()
		}
	}
}
