package cni

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureBridge makes the Linux bridge name exist with MTU mtu (0 leaves it
// alone), the gateway address gw (e.g. 10.244.3.1/24) and up. An existing
// bridge is adopted: other addresses on it are left in place. Calling it
// again with the same arguments changes nothing, and concurrent callers (the
// agent and several CNI ADDs) are fine. It returns what it had to fix
// (nil when the bridge was as it should be).
func EnsureBridge(name string, gw netip.Prefix, mtu int) (fixed []string, err error) {
	if !gw.IsValid() {
		return fixed, fmt.Errorf("ensure bridge %q: gateway address is not set", name)
	}
	br, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fixed, fmt.Errorf("ensure bridge %q: look up: %w", name, err)
		}
		br, err = createBridge(name, gw, mtu)
		if err != nil {
			return fixed, err
		}
		fixed = append(fixed, "created bridge "+name)
	}
	if br.Type() != "bridge" {
		return fixed, fmt.Errorf("ensure bridge %q: a %s link of that name exists and is not a bridge; delete it or configure another bridge name", name, br.Type())
	}
	if mtu > 0 && br.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(br, mtu); err != nil {
			return fixed, fmt.Errorf("ensure bridge %q: set mtu %d: %w", name, mtu, err)
		}
		fixed = append(fixed, fmt.Sprintf("set mtu %d", mtu))
	}
	has, err := hasAddr(br, gw)
	if err != nil {
		return fixed, fmt.Errorf("ensure bridge %q: %w", name, err)
	}
	if !has {
		addr := &netlink.Addr{IPNet: ptr(ipNet(gw))}
		if err := netlink.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fixed, fmt.Errorf("ensure bridge %q: add address %s: %w", name, gw, err)
		}
		fixed = append(fixed, "added address "+gw.String())
	}
	set, err := routeBetweenPorts(name)
	if err != nil {
		return fixed, fmt.Errorf("ensure bridge %q: %w", name, err)
	}
	fixed = append(fixed, set...)
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return fixed, fmt.Errorf("ensure bridge %q: set up: %w", name, err)
		}
		fixed = append(fixed, "set up")
	}
	return fixed, nil
}

// routeBetweenPorts makes the node route traffic between pods of the
// bridge: their ports are isolated, so the bridge answers ARP for the other
// pods (proxy_arp_pvlan) and forwards what comes back in on the same
// interface, without ICMP redirects (which would send pods to a neighbour
// they cannot reach), and at once. The kernel sends redirects if either the interface's
// or the "all" setting allows them, so both are turned off.
func routeBetweenPorts(bridge string) (set []string, err error) {
	settings := []struct{ key, value string }{
		{"net/ipv4/conf/" + bridge + "/forwarding", "1"},
		{"net/ipv4/conf/" + bridge + "/proxy_arp_pvlan", "1"},
		{"net/ipv4/conf/" + bridge + "/send_redirects", "0"},
		{"net/ipv4/conf/all/send_redirects", "0"},
		// Proxied ARP answers are otherwise held back up to 0.8 s.
		{"net/ipv4/neigh/" + bridge + "/proxy_delay", "0"},
	}
	// Where br_netfilter is loaded, frames crossing a bridge would also go
	// through the IP hooks: a DNAT to a pod of this bridge would then turn
	// into a bridged frame that the isolated ports drop. netloom routes all
	// pod traffic, so the bridge need not call them.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		settings = append(settings, struct{ key, value string }{"net/bridge/bridge-nf-call-iptables", "0"})
	}
	for _, s := range settings {
		path := "/proc/sys/" + s.key
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == s.value {
			continue
		}
		key := strings.ReplaceAll(s.key, "/", ".")
		if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
			return set, fmt.Errorf("set %s=%s: %w", key, s.value, err)
		}
		set = append(set, key+"="+s.value)
	}
	return set, nil
}

// createBridge adds the bridge with a fixed MAC address: a bridge whose
// address was set keeps it, one with a kernel-chosen address takes the
// lowest MAC of its ports and so changes (and breaks the pods' ARP entries
// for the gateway) as pods come and go.
func createBridge(name string, gw netip.Prefix, mtu int) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if mtu > 0 {
		attrs.MTU = mtu
	}
	attrs.HardwareAddr = bridgeMAC(name, gw)
	err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("ensure bridge %q: create: %w", name, err)
	}
	br, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("ensure bridge %q: look up after create: %w", name, err)
	}
	return br, nil
}

// bridgeMAC is a locally administered unicast address derived from the
// bridge name and the gateway, so it differs between nodes.
func bridgeMAC(name string, gw netip.Prefix) net.HardwareAddr {
	sum := sha256.Sum256([]byte(name + "|" + gw.String()))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02
	return mac
}

// hasAddr reports whether link carries exactly addr (address and length).
func hasAddr(link netlink.Link, addr netip.Prefix) (bool, error) {
	family := netlink.FAMILY_V4
	if addr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlinksafe.AddrList(link, family)
	if err != nil {
		return false, fmt.Errorf("list addresses of %q: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == addr {
			return true, nil
		}
	}
	return false, nil
}

// prefixOf converts a net.IPNet to a prefix keeping the address.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ptr[T any](v T) *T { return &v }
