package node

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
)

type recAnnouncer struct {
	mu    sync.Mutex
	owned []netip.Addr
}

func (r *recAnnouncer) SetOwned(v []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owned = slices.Clone(v)
}
func (r *recAnnouncer) Reannounce() {}

func (r *recAnnouncer) get() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.owned)
}

// TestAnnounceGate: a VIP this node comes to own is announced once the
// firewall programmed a table in which it owns it, or after gateWait; one
// it gives up goes at once; one announced stays announced.
func TestAnnounceGate(t *testing.T) {
	v1, v2 := netip.MustParseAddr("10.77.0.200"), netip.MustParseAddr("10.77.0.201")
	an := &recAnnouncer{}
	g := newAnnounceGate(an, "n1")
	owning := func(vips ...netip.Addr) *cluster.Snapshot {
		s := &cluster.Snapshot{Node: cluster.Local{Name: "n1", Joined: true}, LB: &cluster.LB{Owners: map[netip.Addr]string{}}}
		for _, v := range vips {
			s.LB.Owners[v] = "n1"
		}
		return s
	}
	g.SetOwned([]netip.Addr{v1})
	if got := an.get(); len(got) != 0 {
		t.Fatalf("announced %v before the firewall programmed the VIP", got)
	}
	g.programmed(owning(v1))
	if got := an.get(); !slices.Equal(got, []netip.Addr{v1}) {
		t.Fatalf("after the firewall programmed it: announced %v, want [%s]", got, v1)
	}
	// A later table without it (an older view) does not take it back.
	g.programmed(owning())
	if got := an.get(); !slices.Equal(got, []netip.Addr{v1}) {
		t.Fatalf("announced %v, want [%s] still", got, v1)
	}
	// v2 is never programmed: announced after gateWait all the same.
	start := time.Now()
	g.SetOwned([]netip.Addr{v1, v2})
	if got := an.get(); !slices.Equal(got, []netip.Addr{v1}) {
		t.Fatalf("announced %v, want only %s while %s waits", got, v1, v2)
	}
	for !slices.Equal(an.get(), []netip.Addr{v1, v2}) {
		if time.Since(start) > 10*gateWait {
			t.Fatalf("%s not announced %s after it was wanted", v2, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(start); d < gateWait {
		t.Errorf("%s announced after %s, before gateWait %s", v2, d, gateWait)
	}
	// Given up: at once.
	g.SetOwned([]netip.Addr{v2})
	if got := an.get(); !slices.Equal(got, []netip.Addr{v2}) {
		t.Fatalf("announced %v after v1 was given up, want [%s]", got, v2)
	}
}
