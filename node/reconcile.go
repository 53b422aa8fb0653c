package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/node/cni"
	"github.com/netloom/netloom/node/events"
	"github.com/netloom/netloom/systemd"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// reconcile runs one pass of every subsystem: subnet agreement, the
// overlay, the node-local data plane, then the metadata and readiness.
func (a *Agent) reconcile() {
	table := a.subnetTable()
	a.mu.Lock()
	joined := a.joined
	a.mu.Unlock()
	if joined {
		a.claimSubnet(table)
	} else if own, ok := table.ByNode[a.cfg.Name]; ok {
		// A restart: the persisted lease gives the subnet back before the
		// cluster answers; nothing new is claimed until it has.
		a.setSubnet(own, "")
	}
	a.mu.Lock()
	subnet := a.subnet
	a.mu.Unlock()

	// The bridge first: routes to remote pods leave from its address.
	if subnet.IsValid() {
		start := time.Now()
		err := a.local(subnet)
		a.metrics.ObserveReconcile("local", time.Since(start), err)
		if err != nil {
			a.log.Warn("node data plane", "err", err)
		}
	}
	meshOK := false
	if joined {
		a.mu.Lock()
		a.settled = true
		a.mu.Unlock()
		// Until the node has heard the cluster after a start, it leaves the
		// peers and routes it finds in place rather than remove live ones.
		src := netip.Addr{}
		if subnet.IsValid() {
			src = ipam.Gateway(subnet)
		}
		start := time.Now()
		topo := mesh.Desired(a.cfg.Name, a.members.Members(), table.ByNode, src,
			mesh.TopologyOptions{Keepalive: a.cfg.Keepalive, DeadGrace: a.cfg.PeerGrace, Now: time.Now()})
		perr := a.dev.SetPeers(topo.Peers)
		if perr != nil {
			a.log.Warn("set WireGuard peers", "err", perr)
		}
		rerr := a.dev.SetRoutes(topo.Routes)
		if rerr != nil {
			a.log.Warn("set routes to remote pod subnets", "err", rerr)
		}
		err := errors.Join(perr, rerr)
		a.metrics.ObserveReconcile("mesh", time.Since(start), err)
		meshOK = err == nil
		if !meshOK {
			time.AfterFunc(500*time.Millisecond, a.poke)
		}
	}
	if subnet.IsValid() {
		start := time.Now()
		ran, err := a.dataplane(subnet)
		if ran || err != nil { // passes with nothing to do are not timed
			a.metrics.ObserveReconcile("firewall", time.Since(start), err)
		}
		if err != nil {
			a.log.Warn("services and network policy", "err", err)
		}
	}
	if err := a.members.SetMeta(a.meta()); err != nil {
		a.log.Warn("update node metadata", "err", err)
	}
	// Ready (pods may attach, systemd hears READY=1) once the subnet is
	// ours and the overlay to every known member is programmed, so that no
	// pod packet can leave before its route exists.
	a.mu.Lock()
	becameReady := !a.ready && a.settled && subnet.IsValid() && meshOK
	if becameReady {
		a.ready = true
	}
	a.mu.Unlock()
	if becameReady {
		a.log.Info("node ready", "subnet", subnet)
		_ = systemd.Ready()
	}
}

// meta is what this node gossips about itself.
func (a *Agent) meta() mesh.Meta {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := mesh.Meta{Addr: a.cfg.advertise.String(), WGKey: a.pubKey, WGPort: a.cfg.WGPort, Version: Version, Leaving: a.leaving}
	if a.subnet.IsValid() {
		m.Subnet = a.subnet.String()
	}
	return m
}

// leases reads every subnet lease from the store.
func (a *Agent) leases() []ipam.Lease {
	var out []ipam.Lease
	for _, e := range a.store.List(KindLease, "") {
		var l ipam.Lease
		if err := json.Unmarshal(e.Value, &l); err == nil && l.Node == e.Key.Name {
			out = append(out, l)
		}
	}
	return out
}

func (a *Agent) subnetTable() ipam.Table {
	return ipam.Resolve(a.leases(), a.members.Alive(), time.Now(), a.cfg.SubnetGrace)
}

// claimSubnet keeps this node's lease: renews the one it won, or claims a
// free subnet when it has none or lost a conflict (ipam.Claim decides).
func (a *Agent) claimSubnet(t ipam.Table) {
	c := a.cfg
	now := time.Now()
	cur := ipam.Lease{Node: c.Name}
	for _, l := range a.leases() {
		if l.Node == c.Name {
			cur = l
		}
	}
	renew := c.SubnetGrace / 4
	if renew > time.Hour {
		renew = time.Hour
	}
	seq := uint32(0)
	if cur.Claimed == now.UnixMilli() {
		seq = cur.ClaimedSeq + 1
	}
	next, err := ipam.Claim(c.cidr, c.NodeMask, t, cur, now, seq, renew)
	if err != nil {
		if _, won := t.ByNode[c.Name]; !won && cur.Subnet.IsValid() {
			// A lost lease is withdrawn so that it does not hold the winner back.
			a.deleteLease()
		}
		a.setSubnet(netip.Prefix{}, err.Error()+"; retrying")
		return
	}
	if next != cur {
		if cur.Subnet.IsValid() && next.Subnet != cur.Subnet {
			a.log.Warn("subnet conflict lost; claiming another", "lost", cur.Subnet, "winner", t.Owner[cur.Subnet], "claim", next.Subnet)
			a.metrics.SubnetConflict()
			a.events.Add(events.SubnetConflict, cur.Subnet.String(), fmt.Sprintf("subnet %s also claimed by %s, who claimed it first; this node claims %s", cur.Subnet, t.Owner[cur.Subnet], next.Subnet))
		} else if next.Subnet != cur.Subnet {
			a.log.Info("claiming pod subnet", "subnet", next.Subnet)
		}
		a.putLease(next)
	}
	if won, ok := t.ByNode[c.Name]; ok && won == next.Subnet {
		// A fresh claim is used once it has had time to meet a competing
		// one by gossip; a restart's old lease is used at once.
		if age := now.Sub(time.UnixMilli(next.Claimed)); age < claimSettle {
			time.AfterFunc(claimSettle-age, a.poke)
			return
		}
		a.setSubnet(won, "")
		return
	}
	// A fresh claim is ours once the cluster has seen it without a conflict:
	// the next pass, after the gossip of it, resolves again.
	a.poke()
}

// claimSettle is how long a new subnet claim waits for a competing claim to
// arrive by gossip before the node uses it.
const claimSettle = time.Second

func (a *Agent) deleteLease() {
	entries, err := a.store.Apply(nil, []store.Key{{Kind: KindLease, Name: a.cfg.Name}})
	if err != nil {
		a.log.Warn("withdraw subnet lease", "err", err)
		return
	}
	a.repl.Publish(entries)
}

func (a *Agent) putLease(l ipam.Lease) {
	b, _ := json.Marshal(l)
	entries, err := a.store.Apply([]store.Put{{Key: store.Key{Kind: KindLease, Name: l.Node}, Value: b}}, nil)
	if err != nil {
		a.log.Warn("store subnet lease", "err", err)
		return
	}
	a.repl.Publish(entries)
}

func (a *Agent) setSubnet(p netip.Prefix, errText string) {
	a.mu.Lock()
	changed := a.subnet != p
	logErr := errText != "" && errText != a.subnetErr
	a.subnet, a.subnetErr = p, errText
	a.mu.Unlock()
	if logErr {
		a.log.Error("no pod subnet for this node", "err", errText)
		a.events.Add(events.SubnetFull, "", errText)
	}
	if changed && p.IsValid() {
		a.log.Info("pod subnet", "subnet", p)
		a.events.Add(events.SubnetClaimed, p.String(), "this node's pod subnet is "+p.String())
	}
}

// local programs the node's own data plane for its subnet: the pod bridge,
// the pod IP allocator and the nftables table.
func (a *Agent) local(subnet netip.Prefix) error {
	c := a.cfg
	gw := netip.PrefixFrom(ipam.Gateway(subnet), subnet.Bits())
	var errs []error
	if err := cni.EnsureBridge(c.Bridge, gw, c.mtu); err != nil {
		errs = append(errs, err)
	}
	if err := ensureClusterUnreachable(c.cidr); err != nil {
		errs = append(errs, err)
	}
	a.mu.Lock()
	if a.alloc == nil {
		al, err := ipam.OpenAllocator(filepath.Join(c.DataDir, "pods.json"), subnet)
		if err != nil {
			errs = append(errs, err)
		} else {
			a.alloc = al
		}
	} else if a.alloc.Subnet() != subnet {
		if err := a.alloc.SetSubnet(subnet); err != nil {
			errs = append(errs, err)
		}
	}
	a.mu.Unlock()
	return errors.Join(errs...)
}

// clusterRouteProto marks the routes netloom owns (as mesh/wg does).
const clusterRouteProto = 78

// ensureClusterUnreachable installs "unreachable <cluster CIDR>": traffic to
// a cluster address that has no more specific route (a remote node that is
// gone, or not yet known) is refused instead of leaving by the default route
// unencrypted.
func ensureClusterUnreachable(cidr netip.Prefix) error {
	r := clusterUnreachable(cidr)
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("install unreachable route for %s: %w", cidr, err)
	}
	return nil
}

func removeClusterUnreachable(cidr netip.Prefix) error {
	if err := netlink.RouteDel(clusterUnreachable(cidr)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove unreachable route for %s: %w", cidr, err)
	}
	return nil
}

func clusterUnreachable(cidr netip.Prefix) *netlink.Route {
	family := netlink.FAMILY_V4
	if cidr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())},
		Type:     unix.RTN_UNREACHABLE,
		Protocol: clusterRouteProto,
		Family:   family,
	}
}
