package arp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// DefaultBurst is when gratuitous ARP is sent after taking a VIP (or after
// Reannounce), counted from that moment: at once, then repeated for a few
// seconds in case the first ones are lost or a switch is slow to learn.
var DefaultBurst = []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}

// Stats counts what an Announcer did.
type Stats struct {
	Requests   uint64 // ARP requests for owned VIPs (answered or failed)
	Replies    uint64 // replies sent
	Gratuitous uint64 // gratuitous ARP rounds sent (one request and one reply each)
	Errors     uint64 // send and receive errors
}

// Announcer answers ARP requests for the VIPs this node owns on one
// interface and sends gratuitous ARP for them. Its methods may be called
// from any goroutine, before, during or after Run.
type Announcer struct {
	iface string
	log   *slog.Logger

	mu    sync.Mutex
	sched scheduler
	kick  chan struct{} // cap 1

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	ready     chan struct{} // closed once Run has its socket
	readyOnce sync.Once

	requests, replies, garps, errs atomic.Uint64
}

// NewAnnouncer returns an announcer for the interface named ifaceName (the
// underlay, where the neighbours that reach the VIPs are). It starts
// nothing; Run does the work.
func NewAnnouncer(ifaceName string, log *slog.Logger) *Announcer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Announcer{
		iface: ifaceName,
		log:   log.With("iface", ifaceName),
		sched: scheduler{owned: map[netip.Addr]*garp{}, burst: DefaultBurst},
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		ready: make(chan struct{}),
	}
}

// SetOwned sets the VIPs this node owns. VIPs not owned before get
// gratuitous ARP at once and then on the burst schedule (DefaultBurst); VIPs
// no longer in vips are no longer answered. Only IPv4 VIPs are announced
// (IPv6 would need NDP); others are ignored. Calling it again with the same
// set changes nothing.
func (a *Announcer) SetOwned(vips []netip.Addr) {
	a.mu.Lock()
	added, removed, skipped := a.sched.set(vips, time.Now())
	a.mu.Unlock()
	for _, v := range added {
		a.log.Info("vip taken", "vip", v)
	}
	for _, v := range removed {
		a.log.Info("vip released", "vip", v)
	}
	for _, v := range skipped {
		a.log.Debug("vip not announced: not IPv4", "vip", v)
	}
	if len(added) > 0 {
		a.poke()
	}
}

// Owned returns the VIPs this node announces, sorted.
func (a *Announcer) Owned() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sched.vips()
}

// SetGARPInterval makes the announcer repeat gratuitous ARP for every owned
// VIP every d after its burst, for switches whose forwarding tables forget
// quickly; 0 (the default) turns that off.
func (a *Announcer) SetGARPInterval(d time.Duration) {
	a.mu.Lock()
	a.sched.setInterval(d, time.Now())
	a.mu.Unlock()
	a.poke()
}

// Reannounce sends gratuitous ARP for every owned VIP again, on the burst
// schedule: after a partition heals or the node rejoins, so that neighbours
// that followed another node meanwhile come back.
func (a *Announcer) Reannounce() {
	a.mu.Lock()
	a.sched.reannounce(time.Now())
	a.mu.Unlock()
	a.poke()
}

// Stats returns the counters.
func (a *Announcer) Stats() Stats {
	return Stats{Requests: a.requests.Load(), Replies: a.replies.Load(), Gratuitous: a.garps.Load(), Errors: a.errs.Load()}
}

// Ready is closed once Run has opened its socket.
func (a *Announcer) Ready() <-chan struct{} { return a.ready }

// Close stops Run (which then returns nil). It does not wait for it.
func (a *Announcer) Close() error {
	a.closeOnce.Do(func() { close(a.done) })
	return nil
}

func (a *Announcer) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Announcer) isOwned(vip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sched.owned[vip] != nil
}

// Run opens a raw ARP socket on the interface (in the network namespace of
// the calling thread), answers requests for owned VIPs and sends the
// gratuitous ARP that SetOwned, SetGARPInterval and Reannounce ask for,
// until ctx is done or Close is called; then it returns nil. It returns an
// error when the interface or the socket cannot be opened or the socket
// fails.
func (a *Announcer) Run(ctx context.Context) error {
	ifi, err := net.InterfaceByName(a.iface)
	if err != nil {
		return fmt.Errorf("arp announcer: interface %s: %w", a.iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("arp announcer: interface %s has no Ethernet address; give the underlay interface", a.iface)
	}
	cl, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("arp announcer: open ARP socket on %s: %w", a.iface, err)
	}
	mac := ifi.HardwareAddr
	a.readyOnce.Do(func() { close(a.ready) })
	a.log.Info("arp announcer running", "mac", mac.String())

	var closing atomic.Bool
	readErr := make(chan error, 1)
	go func() { readErr <- a.serve(cl, mac, &closing) }()
	stop := func() error {
		closing.Store(true)
		cerr := cl.Close()
		<-readErr
		if cerr != nil {
			return fmt.Errorf("arp announcer: close socket on %s: %w", a.iface, cerr)
		}
		return nil
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		a.mu.Lock()
		due := a.sched.due(time.Now())
		next, ok := a.sched.next()
		a.mu.Unlock()
		for _, vip := range due {
			if err := gratuitous(cl, mac, vip); err != nil {
				a.errs.Add(1)
				a.log.Warn("gratuitous arp failed", "vip", vip, "err", err)
				continue
			}
			a.garps.Add(1)
			a.log.Debug("gratuitous arp sent", "vip", vip)
		}
		wait := time.Hour
		if ok {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return stop()
		case <-a.done:
			return stop()
		case err := <-readErr:
			cl.Close()
			return fmt.Errorf("arp announcer: read on %s: %w", a.iface, err)
		case <-a.kick:
		case <-timer.C:
		}
	}
}

// serve answers requests until the socket fails or is closed.
func (a *Announcer) serve(cl *arp.Client, mac net.HardwareAddr, closing *atomic.Bool) error {
	for {
		pkt, eth, err := cl.Read()
		if err != nil {
			if closing.Load() {
				return nil
			}
			var op *net.OpError
			if errors.As(err, &op) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return err
			}
			a.errs.Add(1) // a malformed packet: skip it
			continue
		}
		if pkt.Operation != arp.OperationRequest || !a.isOwned(pkt.TargetIP) {
			continue // the common case, decided without the full check
		}
		a.mu.Lock()
		ok, why := ShouldAnswer(pkt, eth, a.sched.ownedSet(), mac)
		a.mu.Unlock()
		if !ok {
			if why == ReasonGratuitous {
				a.log.Warn("another host announces a vip we own", "vip", pkt.TargetIP, "mac", pkt.SenderHardwareAddr.String())
			}
			continue
		}
		a.requests.Add(1)
		if err := cl.Reply(pkt, mac, pkt.TargetIP); err != nil {
			a.errs.Add(1)
			a.log.Warn("arp reply failed", "vip", pkt.TargetIP, "to", pkt.SenderIP, "err", err)
			continue
		}
		a.replies.Add(1)
	}
}

// gratuitous announces vip as at mac to the whole segment, as MetalLB does:
// an ARP request and an ARP reply, both with sender and target address vip,
// broadcast. The request's target hardware address is broadcast (as
// `arping -U` sends); the reply's is mac (RFC 5944 4.6; Linux takes a reply
// as gratuitous only then, see arp_is_garp).
func gratuitous(cl *arp.Client, mac net.HardwareAddr, vip netip.Addr) error {
	req, err := arp.NewPacket(arp.OperationRequest, mac, vip, ethernet.Broadcast, vip)
	if err != nil {
		return fmt.Errorf("gratuitous arp request for %s: %w", vip, err)
	}
	rep, err := arp.NewPacket(arp.OperationReply, mac, vip, mac, vip)
	if err != nil {
		return fmt.Errorf("gratuitous arp reply for %s: %w", vip, err)
	}
	return errors.Join(cl.WriteTo(req, ethernet.Broadcast), cl.WriteTo(rep, ethernet.Broadcast))
}

// scheduler decides when each owned VIP gets gratuitous ARP. Not safe for
// concurrent use; the Announcer guards it.
type scheduler struct {
	owned    map[netip.Addr]*garp
	set4     map[netip.Addr]bool // same keys as owned, for ShouldAnswer
	burst    []time.Duration     // offsets from taking the VIP
	interval time.Duration       // repeat after the burst; 0 = never
}

type garp struct {
	start time.Time // when the burst began
	step  int       // next index into burst; len(burst) = burst done
	next  time.Time // zero = nothing planned
}

func (s *scheduler) plan(g *garp) {
	switch {
	case g.step < len(s.burst):
		g.next = g.start.Add(s.burst[g.step])
	case s.interval > 0:
		g.next = g.next.Add(s.interval)
	default:
		g.next = time.Time{}
	}
}

func (s *scheduler) begin(g *garp, now time.Time) {
	g.start, g.step = now, 0
	s.plan(g)
}

// set makes vips the owned set; it returns what was added and removed and
// the VIPs it ignored (not IPv4).
func (s *scheduler) set(vips []netip.Addr, now time.Time) (added, removed, skipped []netip.Addr) {
	want := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		v = v.Unmap()
		if !v.Is4() {
			skipped = append(skipped, v)
			continue
		}
		want[v] = true
		if s.owned[v] == nil {
			g := &garp{}
			s.begin(g, now)
			s.owned[v] = g
			added = append(added, v)
		}
	}
	for v := range s.owned {
		if !want[v] {
			delete(s.owned, v)
			removed = append(removed, v)
		}
	}
	s.set4 = want
	slices.SortFunc(added, netip.Addr.Compare)
	slices.SortFunc(removed, netip.Addr.Compare)
	return added, removed, skipped
}

func (s *scheduler) ownedSet() map[netip.Addr]bool { return s.set4 }

func (s *scheduler) vips() []netip.Addr {
	out := make([]netip.Addr, 0, len(s.owned))
	for v := range s.owned {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (s *scheduler) reannounce(now time.Time) {
	for _, g := range s.owned {
		s.begin(g, now)
	}
}

func (s *scheduler) setInterval(d time.Duration, now time.Time) {
	s.interval = max(d, 0)
	for _, g := range s.owned {
		if g.step >= len(s.burst) {
			if s.interval > 0 {
				g.next = now.Add(s.interval)
			} else {
				g.next = time.Time{}
			}
		}
	}
}

// due returns the VIPs whose gratuitous ARP is due at now, sorted, and plans
// their next one. The burst counts from the first announcement actually
// sent (SetOwned may come before Run has its socket); steps that are
// overdue later (the loop was held up) are merged into one announcement.
func (s *scheduler) due(now time.Time) []netip.Addr {
	var out []netip.Addr
	for v, g := range s.owned {
		if g.next.IsZero() || g.next.After(now) {
			continue
		}
		out = append(out, v)
		if g.step == 0 {
			g.start = now // the burst counts from the first announcement sent
		}
		if g.step < len(s.burst) {
			g.step++
			for g.step < len(s.burst) && !g.start.Add(s.burst[g.step]).After(now) {
				g.step++ // skip what is overdue: one announcement is enough
			}
			if g.step < len(s.burst) {
				s.plan(g)
				continue
			}
		}
		g.next = now
		s.plan(g)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// next returns the earliest planned announcement.
func (s *scheduler) next() (time.Time, bool) {
	var t time.Time
	for _, g := range s.owned {
		if !g.next.IsZero() && (t.IsZero() || g.next.Before(t)) {
			t = g.next
		}
	}
	return t, !t.IsZero()
}
