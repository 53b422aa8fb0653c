package node

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/lb/lbctl"
)

// VIP drains (lb/drain): the new owner of a VIP forwards the connections
// the old owner still carries; a leaving node waits for its own to end.

// gateWait is how long the ARP announcement of a VIP this node takes over
// waits at most for the firewall to program the VIP's drain.
const gateWait = time.Second

// announceGate stands between the lb room and the ARP announcer: a VIP
// this node comes to own is announced once the firewall has programmed a
// table in which this node owns it, with the rules that forward the old
// owner's connections to it (announced earlier, the clients' first
// packets would meet a table without them and be reset), or after
// gateWait. VIPs given up go at once.
type announceGate struct {
	an   lbctl.Announcer
	self string

	mu      sync.Mutex
	want    []netip.Addr
	ready   map[netip.Addr]bool      // owned in the table now in the kernel
	allowed map[netip.Addr]bool      // announced (while wanted)
	since   map[netip.Addr]time.Time // held back since
	timer   *time.Timer
}

func newAnnounceGate(an lbctl.Announcer, self string) *announceGate {
	return &announceGate{an: an, self: self, ready: map[netip.Addr]bool{}, allowed: map[netip.Addr]bool{}, since: map[netip.Addr]time.Time{}}
}

// SetOwned implements lbctl.Announcer.
func (g *announceGate) SetOwned(vips []netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want = slices.Clone(vips)
	g.update()
}

// Reannounce implements lbctl.Announcer.
func (g *announceGate) Reannounce() { g.an.Reannounce() }

// programmed takes the snapshot whose table the firewall just programmed.
func (g *announceGate) programmed(s *cluster.Snapshot) {
	ready := map[netip.Addr]bool{}
	for _, v := range lbctl.Owned(g.self, s) {
		ready[v] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ready = ready
	g.update()
}

// update announces what may be; g.mu is held.
func (g *announceGate) update() {
	now := time.Now()
	var out []netip.Addr
	var wait time.Duration
	wanted := map[netip.Addr]bool{}
	for _, v := range g.want {
		wanted[v] = true
		if !g.allowed[v] && !g.ready[v] {
			if _, ok := g.since[v]; !ok {
				g.since[v] = now
			}
			if left := gateWait - now.Sub(g.since[v]); left > 0 {
				if wait == 0 || left < wait {
					wait = left
				}
				continue
			}
		}
		g.allowed[v] = true
		out = append(out, v)
	}
	for v := range g.allowed {
		if !wanted[v] {
			delete(g.allowed, v)
		}
	}
	for v := range g.since {
		if !wanted[v] || g.allowed[v] {
			delete(g.since, v)
		}
	}
	if wait > 0 {
		if g.timer != nil {
			g.timer.Stop()
		}
		g.timer = time.AfterFunc(wait, func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.update()
		})
	}
	g.an.SetOwned(out)
}

// drainConfig is the drains' timing from the agent's flags.
func (c settings) drainConfig() drain.Config {
	d := drain.Config{Timeout: c.VIPDrainTimeout, DeadTimeout: c.PeerGrace}
	if c.VIPDrainTimeout <= 0 {
		d.Timeout = -1
	}
	if c.PeerGrace <= 0 {
		d.DeadTimeout = time.Millisecond
	}
	return d
}

// noRedirects turns ICMP redirects off: a node that forwards a drained
// connection to the old owner sends it back out of the interface it came
// in on, and would otherwise tell the client to use the old owner (which
// is leaving) for the VIP. Both "all" and the interface must be off.
func noRedirects(advertise netip.Addr) error {
	names := []string{"all", "default"}
	if iface, err := ifaceOf(advertise); err == nil {
		names = append(names, iface)
	}
	for _, n := range names {
		p := "/proc/sys/net/ipv4/conf/" + n + "/send_redirects"
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("turn ICMP redirects off (%s): %w", p, err)
		}
	}
	return nil
}

// drainLeave waits, on a graceful leave after the VIPs moved, until this
// node forwards no open TCP connection to a VIP any more, or the drain
// timeout passed: its data plane stays meanwhile, and the new owners
// forward those connections' packets here.
func (a *Agent) drainLeave() {
	timeout := a.cfg.VIPDrainTimeout
	if timeout <= 0 {
		return
	}
	ct := drain.NewConntrack(nil)
	vips := func() []netip.Addr {
		s := a.hub.Latest()
		if s.LB == nil {
			return nil
		}
		var out []netip.Addr
		for _, r := range s.LB.Plan.Results {
			if r.VIP.IsValid() {
				out = append(out, r.VIP)
			}
		}
		return out
	}
	start := time.Now()
	last := -1
	for {
		n, err := ct.Open(vips())
		if err != nil {
			a.log.Warn("leave: count connections to VIPs", "err", err)
			return
		}
		if n == 0 {
			if last > 0 {
				a.log.Info("leave: connections to VIPs ended", "after", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if time.Since(start) >= timeout {
			a.log.Warn("leave: drain timeout passed; connections to VIPs still open are cut", "open", n, "timeout", timeout)
			return
		}
		if n != last {
			a.log.Info("leave: waiting for connections to VIPs to end", "open", n, "timeout", timeout)
			last = n
		}
		time.Sleep(250 * time.Millisecond)
	}
}
