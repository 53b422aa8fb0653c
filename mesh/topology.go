package mesh

import (
	"net/netip"
	"sort"
	"time"

	"github.com/netloom/netloom/mesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Topology is the overlay as this node must program it: one WireGuard peer
// per other live member that holds a subnet, and a route to each of those
// subnets through the WireGuard link. It is a pure value computed the same
// way on every node.
type Topology struct {
	Peers  []wg.Peer
	Routes []wg.Route
}

// TopologyOptions tune Desired.
type TopologyOptions struct {
	// Keepalive is every peer's persistent keepalive.
	Keepalive time.Duration
	// DeadGrace is how long a member that failed (not one that left)
	// keeps its peer and route, counted from Member.Since at Now: an agent
	// that restarts more slowly than failure detection (a few hundred
	// milliseconds) loses no pod traffic, since its data plane never
	// stopped. Zero drops a failed member's peer at once.
	DeadGrace time.Duration
	Now       time.Time
}

// Desired computes the topology for node self from the members and the
// agreed subnet table (node name -> subnet). Members that left, that failed
// more than o.DeadGrace ago, that have no usable WireGuard key or endpoint,
// or that hold no subnet are left out. src is the address local traffic to
// remote pods leaves from (the gateway address of self's own subnet); routes
// are only made when it is valid, since remote peers accept only sources
// inside self's subnet.
func Desired(self string, members []Member, subnets map[string]netip.Prefix, src netip.Addr, o TopologyOptions) Topology {
	var t Topology
	for _, m := range members {
		if m.Name == self {
			continue
		}
		switch m.State {
		case StateAlive, StateSuspect:
		case StateDead:
			if o.DeadGrace <= 0 || m.Since.IsZero() || o.Now.Sub(m.Since) >= o.DeadGrace {
				continue
			}
		default:
			continue
		}
		sub, ok := subnets[m.Name]
		if !ok || !sub.IsValid() {
			continue
		}
		key, err := wgtypes.ParseKey(m.Meta.WGKey)
		if err != nil || m.Meta.WGPort <= 0 || m.Meta.WGPort > 65535 {
			continue
		}
		addr, err := netip.ParseAddr(m.Meta.Addr)
		if err != nil {
			addr = m.Addr
		}
		if !addr.IsValid() {
			continue
		}
		// A zone names one of the member's interfaces, not ours; the
		// WireGuard endpoint never carries it, and kept here it made the
		// endpoint differ from the device's on every pass.
		addr = addr.WithZone("")
		t.Peers = append(t.Peers, wg.Peer{
			Name:       m.Name,
			PublicKey:  key,
			Endpoint:   netip.AddrPortFrom(addr, uint16(m.Meta.WGPort)),
			AllowedIPs: []netip.Prefix{sub},
			Keepalive:  o.Keepalive,
		})
		if src.IsValid() {
			t.Routes = append(t.Routes, wg.Route{Dst: sub, Src: src})
		}
	}
	sort.Slice(t.Peers, func(i, j int) bool { return t.Peers[i].Name < t.Peers[j].Name })
	sort.Slice(t.Routes, func(i, j int) bool { return t.Routes[i].Dst.String() < t.Routes[j].Dst.String() })
	return t
}
