package cni

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/node/events"
	"github.com/vishvananda/netlink"
)

// TestHostRepairs: the host controller makes the bridge and the cluster's
// unreachable route, and puts them back, with the pods' ports on the
// bridge, when someone removes them; each repair is an event.
func TestHostRepairs(t *testing.T) {
	requireRoot(t)
	node := newNetns(t)
	subnet := netip.MustParsePrefix("10.244.7.0/24")
	cidr := netip.MustParsePrefix("10.244.0.0/16")
	port := HostVethName("c0ffee", "eth0")
	ev := events.NewLog("n1", 10)
	var ready netip.Prefix
	h := &Host{Bridge: "nltbr2", MTU: 1380, ClusterCIDR: cidr, Ports: func() []string { return []string{port, "gone0"} },
		Events: ev, Ready: func(p netip.Prefix) { ready = p }}
	s := &cluster.Snapshot{Node: cluster.Local{Name: "n1", Subnet: subnet}}
	pass := func() error {
		_, err := h.Pass(context.Background(), s, true)
		return err
	}
	err := ns.WithNetNSPath(netnsPath(node), func(ns.NetNS) error {
		if err := pass(); err != nil {
			return err
		}
		if ready != subnet || len(ev.List()) != 0 {
			return fmt.Errorf("first pass: ready %s, events %+v; want ready for %s and no repair", ready, ev.List(), subnet)
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, MTU: 1380}, PeerName: "nltpeer0"}); err != nil {
			return err
		}
		if err := plugHost(port, "nltbr2"); err != nil {
			return err
		}
		// Someone deletes the bridge: it comes back, with the port on it.
		br, err := netlink.LinkByName("nltbr2")
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(br); err != nil {
			return err
		}
		if err := pass(); err != nil {
			return err
		}
		br, err = netlink.LinkByName("nltbr2")
		if err != nil {
			return fmt.Errorf("bridge not restored: %w", err)
		}
		l, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("port %s not back on the bridge", port)
		}
		if es := ev.List(); len(es) != 1 || es[0].Kind != events.Repaired || !strings.Contains(es[0].Message, "created bridge") {
			return fmt.Errorf("events after the bridge was deleted: %+v; want one repair naming the bridge", es)
		}
		// Someone deletes the unreachable route.
		if err := netlink.RouteDel(clusterUnreachable(cidr)); err != nil {
			return err
		}
		if err := pass(); err != nil {
			return err
		}
		if es := ev.List(); len(es) != 2 || !strings.Contains(es[1].Message, "unreachable route") {
			return fmt.Errorf("events after the route was deleted: %+v; want a repair naming the route", es)
		}
		// Nothing to do: no event.
		if err := pass(); err != nil {
			return err
		}
		if n := len(ev.List()); n != 2 {
			return fmt.Errorf("%d events after a pass with nothing to repair, want 2", n)
		}
		return RemoveHost("nltbr2", cidr)
	})
	if err != nil {
		t.Fatal(err)
	}
}
