package integration

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// TestLeave: `netloom leave` on node3 exits 0; the others see it left, drop
// its subnet, peer and route; node3 keeps nothing of netloom.
func TestLeave(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: -1, ExtraAgentArgs: fastTimers})
	x.start()
	n3 := x.node(3)
	st3 := x.status(n3)
	subnet3 := netip.MustParsePrefix(st3.Node.Subnet)
	key3 := st3.Node.WireGuard.PublicKey
	compPid, _, err := companionPid(n3)
	if err != nil && wantMode() == "userspace" {
		t.Fatal(err)
	}

	r := x.cli(n3, nil, "leave")
	t.Logf("netloom leave on %s: exit %d, stdout %q, stderr %q", n3.Name, r.exitCode(), r.stdout, r.stderr)
	if r.err != nil {
		t.Fatalf("netloom leave on %s failed: %v", n3.Name, r)
	}
	select {
	case <-n3.Agent.Exited():
	case <-time.After(20 * time.Second):
		t.Fatalf("agent %s still runs 20s after leave", n3.Name)
	}
	if err := n3.Agent.ExitErr(); err != nil {
		t.Errorf("agent %s exited with %v after leave, want status 0", n3.Name, err)
	}

	// Nothing of netloom is left on node3.
	names, err := links(n3.NS)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{n3.WGIface, "netloom-br0"} {
		if slices.Contains(names, l) {
			t.Errorf("link %s is left in %s after leave (links: %v)", l, n3.NS, names)
		}
	}
	tables := x.must(n3.NS, "nft", "list", "tables")
	if strings.Contains(tables, "table inet netloom") {
		t.Errorf("nftables table inet netloom is left in %s after leave: %q", n3.NS, tables)
	}
	if compPid != 0 {
		eventually(t, 10*time.Second, "node3's WireGuard companion ends", func() error {
			if _, err := procStart(compPid); err == nil {
				return fmt.Errorf("companion pid %d still runs", compPid)
			}
			return nil
		})
	}
	if _, err := os.Lstat(uapiSocket(n3)); err == nil {
		t.Errorf("UAPI socket %s is left after leave", uapiSocket(n3))
	}

	for _, n := range []*demo.Node{x.node(1), x.node(2)} {
		eventually(t, 20*time.Second, n.Name+" sees node3 left, without subnet, peer or route", func() error {
			st, err := x.c.Status(t.Context(), n)
			if err != nil {
				return err
			}
			var errs []error
			if m, ok := member(st, n3.Name); !ok {
				errs = append(errs, fmt.Errorf("%s does not list %s; want it listed as left", n.Name, n3.Name))
			} else if m.State != "left" {
				errs = append(errs, fmt.Errorf("%s sees %s %s, want left", n.Name, n3.Name, m.State))
			}
			for _, m := range st.Members {
				if m.Subnet == subnet3.String() {
					errs = append(errs, fmt.Errorf("%s still shows subnet %s for member %s", n.Name, subnet3, m.Name))
				}
			}
			errs = append(errs, x.noPeerNoRoute(n, "node3", key3, subnet3))
			peers, err := x.wgPeers(n)
			if err != nil {
				return err
			}
			if len(peers) != 1 {
				errs = append(errs, fmt.Errorf("%s has %d WireGuard peers, want 1: %v", n.Name, len(peers), peers))
			}
			return errors.Join(errs...)
		})
	}
}

// TestKilledAgent: after SIGKILL of node2's agent the others mark it dead
// and drop its peer and route; started again, it rejoins with its subnet.
func TestKilledAgent(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 1, ExtraAgentArgs: fastTimers})
	x.start()
	n2 := x.node(2)
	st2 := x.status(n2)
	subnet2 := netip.MustParsePrefix(st2.Node.Subnet)
	key2 := st2.Node.WireGuard.PublicKey

	if err := x.c.StopAgent(n2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	others := []*demo.Node{x.node(1), x.node(3)}
	for _, n := range others {
		eventually(t, 30*time.Second, n.Name+" marks node2 dead and drops its peer and route", func() error {
			st, err := x.c.Status(t.Context(), n)
			if err != nil {
				return err
			}
			var errs []error
			if m, ok := member(st, n2.Name); ok && (m.State == "alive" || m.State == "suspect") {
				errs = append(errs, fmt.Errorf("%s sees %s %s", n.Name, n2.Name, m.State))
			}
			errs = append(errs, x.noPeerNoRoute(n, "node2", key2, subnet2))
			return errors.Join(errs...)
		})
		if m, ok := member(x.status(n), n2.Name); ok {
			t.Logf("%s sees %s %s (%s after the SIGKILL)", n.Name, n2.Name, m.State, time.Since(killed).Round(100*time.Millisecond))
		}
	}
	// The pods of the other nodes still reach each other.
	if err := demo.Ping(x.pod(1, 1).NS, x.pod(3, 1).IP); err != nil {
		t.Errorf("node1 pod -> node3 pod with node2 dead: %v", err)
	}

	if err := x.c.StartAgent(n2); err != nil {
		t.Fatal(err)
	}
	x.waitReady()
	if got := x.status(n2).Node.Subnet; got != subnet2.String() {
		t.Errorf("%s had subnet %s before the SIGKILL and %s after rejoining", n2.Name, subnet2, got)
	}
	for _, n := range others {
		eventually(t, 20*time.Second, n.Name+" has node2's peer and route again", func() error {
			peers, err := x.wgPeers(n)
			if err != nil {
				return err
			}
			if !slices.Equal(peers[key2], []string{subnet2.String()}) {
				return fmt.Errorf("%s: peer node2 allowed IPs %v, want [%s]", n.Name, peers[key2], subnet2)
			}
			routes, err := x.routeTo(n, subnet2)
			if err != nil {
				return err
			}
			if len(routes) != 1 {
				return fmt.Errorf("%s: routes to %s: %q, want one", n.Name, subnet2, routes)
			}
			return nil
		})
	}
	for _, from := range []*demo.Pod{x.pod(1, 1), x.pod(3, 1)} {
		eventually(t, 10*time.Second, from.Name+" reaches node2's pod again", func() error {
			return demo.Ping(from.NS, x.pod(2, 1).IP)
		})
	}
}

// noPeerNoRoute checks that node n has no WireGuard peer with key and no
// route to subnet (both of the node called other).
func (x *tc) noPeerNoRoute(n *demo.Node, other, key string, subnet netip.Prefix) error {
	var errs []error
	routes, err := x.routeTo(n, subnet)
	if err != nil {
		return err
	}
	if len(routes) != 0 {
		errs = append(errs, fmt.Errorf("%s still routes %s's subnet: %q", n.Name, other, routes))
	}
	peers, err := x.wgPeers(n)
	if err != nil {
		return err
	}
	if ips, ok := peers[key]; ok {
		errs = append(errs, fmt.Errorf("%s still has WireGuard peer %s (%s, allowed IPs %v)", n.Name, key, other, ips))
	}
	return errors.Join(errs...)
}
