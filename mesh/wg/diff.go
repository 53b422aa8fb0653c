package wg

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is the desired state of one WireGuard peer.
type Peer struct {
	// Name is the node name, used only in logs and errors.
	Name      string
	PublicKey wgtypes.Key
	// Endpoint is the peer's UDP address. The zero value leaves the
	// endpoint the device has (learned by roaming) untouched.
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval, 0 = off. WireGuard
	// counts in whole seconds; the rest is dropped.
	Keepalive time.Duration
}

// Route sends Dst into the WireGuard link, preferring Src as source address.
type Route struct {
	Dst netip.Prefix
	Src netip.Addr // zero: no preferred source
}

// PeerConfig computes the wgctrl configuration that turns the device's peers
// (current, from wgctrl Device) into desired. The result never replaces the
// peer list as a whole: unknown peers are removed one by one, new peers are
// added in full, changed peers get only their changed fields (UpdateOnly),
// and unchanged peers are not mentioned at all so their sessions and
// handshakes stay untouched. changed is false when there is nothing to do.
// If desired names a public key twice, the first entry wins.
func PeerConfig(current []wgtypes.Peer, desired []Peer) (cfg wgtypes.Config, changed bool) {
	want := make(map[wgtypes.Key]Peer, len(desired))
	for _, p := range desired {
		if _, dup := want[p.PublicKey]; !dup {
			want[p.PublicKey] = p
		}
	}
	have := make(map[wgtypes.Key]wgtypes.Peer, len(current))
	for _, p := range current {
		have[p.PublicKey] = p
	}

	var removes, updates []wgtypes.PeerConfig
	for k := range have {
		if _, ok := want[k]; !ok {
			removes = append(removes, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	for k, d := range want {
		keepalive := d.Keepalive.Truncate(time.Second)
		allowed := normPrefixes(d.AllowedIPs)
		c, ok := have[k]
		if !ok {
			pc := wgtypes.PeerConfig{
				PublicKey:                   k,
				PersistentKeepaliveInterval: &keepalive,
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  ipNets(allowed),
			}
			if d.Endpoint.IsValid() {
				pc.Endpoint = udpAddr(d.Endpoint)
			}
			updates = append(updates, pc)
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: k, UpdateOnly: true}
		diff := false
		if d.Endpoint.IsValid() && unmapAddrPort(d.Endpoint) != addrPort(c.Endpoint) {
			pc.Endpoint = udpAddr(d.Endpoint)
			diff = true
		}
		if keepalive != c.PersistentKeepaliveInterval {
			pc.PersistentKeepaliveInterval = &keepalive
			diff = true
		}
		if !slices.Equal(allowed, normPrefixes(prefixes(c.AllowedIPs))) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = ipNets(allowed)
			diff = true
		}
		if diff {
			updates = append(updates, pc)
		}
	}
	byKey := func(a, b wgtypes.PeerConfig) int { return cmp.Compare(a.PublicKey.String(), b.PublicKey.String()) }
	slices.SortFunc(removes, byKey)
	slices.SortFunc(updates, byKey)
	cfg.Peers = append(removes, updates...)
	return cfg, len(cfg.Peers) > 0
}

// RouteDiff compares the routes on the link (current, only those with our
// protocol) with desired, keyed by destination. add holds desired routes
// that are missing or differ in Src (the applier replaces those in place);
// del holds current routes whose destination is no longer desired. If
// desired names a destination twice, the first entry wins.
func RouteDiff(current, desired []Route) (add, del []Route) {
	want := make(map[netip.Prefix]Route, len(desired))
	for _, r := range desired {
		r = normRoute(r)
		if _, dup := want[r.Dst]; !dup {
			want[r.Dst] = r
		}
	}
	have := make(map[netip.Prefix]Route, len(current))
	for _, r := range current {
		r = normRoute(r)
		if _, ok := want[r.Dst]; !ok {
			del = append(del, r)
			continue
		}
		have[r.Dst] = r
	}
	for dst, r := range want {
		if c, ok := have[dst]; !ok || c != r {
			add = append(add, r)
		}
	}
	byDst := func(a, b Route) int {
		if c := comparePrefix(a.Dst, b.Dst); c != 0 {
			return c
		}
		return a.Src.Compare(b.Src)
	}
	slices.SortFunc(add, byDst)
	slices.SortFunc(del, byDst)
	return add, del
}

func normRoute(r Route) Route {
	r.Dst = r.Dst.Masked()
	r.Src = r.Src.Unmap()
	return r
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// normPrefixes returns the prefixes masked, unmapped, sorted and without
// duplicates; invalid ones are dropped.
func normPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func prefixes(ns []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ns))
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, bits := n.Mask.Size()
		if bits == 0 {
			continue
		}
		if a.Is4In6() && bits == 32 {
			a = a.Unmap()
		}
		out = append(out, netip.PrefixFrom(a, ones))
	}
	return out
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, ipNet(p))
	}
	return out
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	ap = unmapAddrPort(ap)
	return &net.UDPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// addrPort converts a wgctrl endpoint; nil gives the zero AddrPort.
func addrPort(u *net.UDPAddr) netip.AddrPort {
	if u == nil {
		return netip.AddrPort{}
	}
	return unmapAddrPort(u.AddrPort())
}
