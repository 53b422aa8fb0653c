package meshctl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/node/events"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeOverlay is the device as a list of peers and routes; drift and err
// simulate a hand edit and a failing kernel.
type fakeOverlay struct {
	peers  []wg.Peer
	routes []wg.Route
	err    error
	gone   bool // the device vanished (its peers and routes with it)
}

func (f *fakeOverlay) Ensure(context.Context) (bool, error) {
	remade := f.gone
	f.gone = false
	if remade {
		f.peers, f.routes = nil, nil
	}
	return remade, nil
}

func (f *fakeOverlay) SetPeers(p []wg.Peer) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := diff(len(f.peers), len(p), func() bool { return samePeers(f.peers, p) })
	f.peers = p
	return n, nil
}

func (f *fakeOverlay) SetRoutes(r []wg.Route) (int, error) {
	n := diff(len(f.routes), len(r), func() bool { return sameRoutes(f.routes, r) })
	f.routes = r
	return n, nil
}

func diff(have, want int, same func() bool) int {
	if same() {
		return 0
	}
	return max(1, want-have, have-want)
}

func samePeers(a, b []wg.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].PublicKey != b[i].PublicKey {
			return false
		}
	}
	return true
}

func sameRoutes(a, b []wg.Route) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func member(t *testing.T, name, addr string, state string) mesh.Member {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return mesh.Member{Name: name, Addr: netip.MustParseAddr(addr), State: state, Self: name == "n1",
		Meta: mesh.Meta{Addr: addr, WGKey: k.PublicKey().String(), WGPort: 51820}}
}

func snapshot(joined bool, members []mesh.Member, subnets map[string]string) *cluster.Snapshot {
	own := netip.MustParsePrefix(subnets["n1"])
	s := &cluster.Snapshot{Node: cluster.Local{Name: "n1", Joined: joined, Subnet: own, Bridge: own}, Members: members,
		Subnets: ipam.Table{ByNode: map[string]netip.Prefix{}}}
	for n, p := range subnets {
		s.Subnets.ByNode[n] = netip.MustParsePrefix(p)
	}
	return s
}

// TestPass: peers and routes follow the members; nothing is touched
// before the node has heard the cluster; a peer removed by hand is put back
// and reported as a repair; a kernel error fails the pass.
func TestPass(t *testing.T) {
	ov := &fakeOverlay{}
	ev := events.NewLog("n1", 10)
	c := New(Config{Name: "n1", Keepalive: 25 * time.Second}, ov, ev)
	repairs := 0
	c.Repaired = func(string) { repairs++ }
	ms := []mesh.Member{member(t, "n1", "10.77.0.11", mesh.StateAlive), member(t, "n2", "10.77.0.12", mesh.StateAlive), member(t, "n3", "10.77.0.13", mesh.StateAlive)}
	subnets := map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24", "n3": "10.244.3.0/24"}
	ctx := context.Background()

	if worked, err := c.Pass(ctx, snapshot(false, ms, subnets), false); worked || err != nil || ov.peers != nil || c.ProgrammedFor(netip.MustParsePrefix("10.244.1.0/24")) {
		t.Fatalf("pass before joining: worked %v err %v peers %v; want nothing done", worked, err, ov.peers)
	}
	s := snapshot(true, ms, subnets)
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if len(ov.peers) != 2 || len(ov.routes) != 2 || ov.routes[0].Src != netip.MustParseAddr("10.244.1.1") || !c.ProgrammedFor(s.Node.Subnet) {
		t.Fatalf("peers %+v routes %+v; want n2 and n3 routed from 10.244.1.1", ov.peers, ov.routes)
	}
	// The same snapshot again: nothing changes, no repair.
	if worked, err := c.Pass(ctx, s, true); worked || err != nil || repairs != 0 {
		t.Fatalf("same snapshot again: worked %v err %v repairs %d; want a no-op", worked, err, repairs)
	}
	// Someone removed n3's peer by hand.
	ov.peers = ov.peers[:1]
	if _, err := c.Pass(ctx, s, true); err != nil {
		t.Fatal(err)
	}
	if len(ov.peers) != 2 || repairs != 1 || len(ev.List()) != 1 || ev.List()[0].Kind != events.Repaired {
		t.Fatalf("after a hand edit: peers %d, repairs %d, events %+v; want the peer back and one repair event", len(ov.peers), repairs, ev.List())
	}
	// Until the bridge holds the gateway (a restart), the routes found stay
	// and the overlay is not programmed.
	nb := snapshot(true, ms, subnets)
	nb.Node.Bridge = netip.Prefix{}
	if _, err := c.Pass(ctx, nb, false); err != nil || len(ov.routes) != 2 || c.ProgrammedFor(nb.Node.Subnet) {
		t.Fatalf("bridge not ready: err %v routes %+v programmed %v; want the routes kept, not programmed", err, ov.routes, c.ProgrammedFor(nb.Node.Subnet))
	}
	// n3 left: its peer goes, which is a change, not a repair.
	ms[2].State = mesh.StateLeft
	if _, err := c.Pass(ctx, snapshot(true, ms, subnets), false); err != nil {
		t.Fatal(err)
	}
	if len(ov.peers) != 1 || repairs != 1 {
		t.Fatalf("after n3 left: peers %+v repairs %d; want n2 only, no repair", ov.peers, repairs)
	}
	ov.err = errors.New("device busy")
	if _, err := c.Pass(ctx, snapshot(true, ms, subnets), false); err == nil || c.ProgrammedFor(s.Node.Subnet) {
		t.Errorf("pass with a failing device: err %v; want an error and not programmed", err)
	}
}

// TestPassRemakesDevice: a repair pass that finds the device gone (its
// userspace companion killed) makes it again and programs its peers and
// routes at once, reported as one repair.
func TestPassRemakesDevice(t *testing.T) {
	ov := &fakeOverlay{}
	ev := events.NewLog("n1", 10)
	c := New(Config{Name: "n1"}, ov, ev)
	repairs := 0
	c.Repaired = func(string) { repairs++ }
	ms := []mesh.Member{member(t, "n1", "10.77.0.11", mesh.StateAlive), member(t, "n2", "10.77.0.12", mesh.StateAlive)}
	s := snapshot(true, ms, map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"})
	ctx := context.Background()
	if _, err := c.Pass(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	ov.gone = true
	// A pass for a new snapshot does not look at the device.
	if _, err := c.Pass(ctx, s, false); err != nil || !ov.gone {
		t.Fatalf("ordinary pass: err %v, device checked %v; want no check", err, !ov.gone)
	}
	if worked, err := c.Pass(ctx, s, true); err != nil || !worked {
		t.Fatalf("repair pass: worked %v err %v", worked, err)
	}
	if len(ov.peers) != 1 || len(ov.routes) != 1 || repairs != 1 || len(ev.List()) != 1 || !strings.Contains(ev.List()[0].Message, "made it again") {
		t.Fatalf("after the device came back: peers %d routes %d repairs %d events %+v; want n2's peer and route, one repair event", len(ov.peers), len(ov.routes), repairs, ev.List())
	}
}
