package node

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/lb/arp"
	"github.com/netloom/netloom/mesh/store"
)

// storeWriter is where the rooms write what the agent records in the
// store: this node's subnet lease and the service assignments it is the
// writer of. Every write is gossiped.
type storeWriter struct {
	repl *store.Replicator
	st   *store.Store
}

// PutLease implements ipamctl.Leases.
func (w storeWriter) PutLease(l ipam.Lease) error {
	p, err := cluster.Leases.Put(store.Key{}, l)
	if err != nil {
		return err
	}
	_, err = w.repl.Apply([]store.Put{p}, nil)
	return err
}

// DeleteLease implements ipamctl.Leases.
func (w storeWriter) DeleteLease(node string) error {
	_, err := w.repl.Apply(nil, []store.Key{{Kind: cluster.KindLease, Name: node}})
	return err
}

// Record implements lbctl.Assignments.
func (w storeWriter) Record(puts map[lb.ServiceKey]lb.Assignment, dels []lb.ServiceKey) error {
	var ps []store.Put
	for k, as := range puts {
		p, err := cluster.Assignments.Put(store.Key{Namespace: k.Namespace, Name: k.Name}, as)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	var ds []store.Key
	for _, k := range dels {
		ds = append(ds, store.Key{Kind: cluster.KindAssignment, Namespace: k.Namespace, Name: k.Name})
	}
	_, err := w.repl.Apply(ps, ds)
	return err
}

// Deleted implements lbctl.Assignments: the recorded assignments whose
// service the store remembers as deleted, and those whose service has been
// unheard of for longer than a deletion is remembered (its tombstone
// expired). A record whose service is merely not here yet (after a heal a
// broadcast of the record can overtake the push/pull that brings the
// service) is kept: deleting it would lose the service's address.
func (w storeWriter) Deleted() []lb.ServiceKey {
	var out []lb.ServiceKey
	for _, e := range w.st.List(cluster.KindAssignment, "") {
		svc := store.Key{Kind: cluster.KindService, Namespace: e.Key.Namespace, Name: e.Key.Name}
		if _, live := w.st.Get(svc); live {
			continue
		}
		if w.st.Deleted(svc) || w.st.Forgotten(e.Version) {
			out = append(out, lb.ServiceKey{Namespace: e.Key.Namespace, Name: e.Key.Name})
		}
	}
	return out
}

// announcerSlot is the ARP announcer as the lb room sees it: it survives
// the announcer's restarts (a failed socket) and keeps the owned set
// across them. Stop silences it for good (a graceful leave).
type announcerSlot struct {
	mu      sync.Mutex
	an      *arp.Announcer
	owned   []netip.Addr
	stopped bool
}

// SetOwned implements lbctl.Announcer.
func (s *announcerSlot) SetOwned(vips []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.owned = vips
	if s.an != nil {
		s.an.SetOwned(vips)
	}
}

// Reannounce implements lbctl.Announcer.
func (s *announcerSlot) Reannounce() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.an != nil && !s.stopped {
		s.an.Reannounce()
	}
}

// Stop stops answering ARP for every VIP at once and for good; it returns
// how many VIPs were owned.
func (s *announcerSlot) Stop() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.owned)
	s.stopped, s.owned = true, nil
	if s.an != nil {
		s.an.SetOwned(nil)
	}
	return n
}

// set installs a new announcer with the owned set.
func (s *announcerSlot) set(an *arp.Announcer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.an = an
	an.SetOwned(s.owned)
}

// runAnnouncer answers ARP for the VIPs this node owns on the underlay
// interface, restarting the announcer if its socket fails.
func (a *Agent) runAnnouncer(ctx context.Context) error {
	iface, err := ifaceOf(a.cfg.advertise)
	if err != nil {
		a.log.Error("no ARP announcements for VIPs", "err", err)
		return err
	}
	for {
		an := arp.NewAnnouncer(iface, a.log)
		an.SetGARPInterval(a.cfg.GARPInterval)
		a.arp.set(an)
		err := an.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("ARP announcer stopped; restarting", "iface", iface, "err", err)
		a.metrics.Repaired("lb")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// ifaceOf names the interface holding addr.
func ifaceOf(addr netip.Addr) (string, error) {
	l, err := linkOf(addr)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}
