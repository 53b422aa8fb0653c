package node

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
	"github.com/vishvananda/netlink"
)

// Version is the netloom version, set at build time.
var Version = "0.1.0-dev"

// Config is the agent's configuration, from flags, a YAML file and the
// environment (see main.go).
type Config struct {
	Name          string
	DataDir       string
	Socket        string
	RunDir        string
	AdvertiseAddr string
	GossipPort    int
	WGPort        int
	WGIface       string
	Bridge        string
	ClusterCIDR   string
	ServiceCIDR   string
	NodeMask      int
	Join          []string
	Token         string
	TokenFile     string
	WireGuard     string
	// WGProcs is the userspace companion's GOMAXPROCS (wg.Config.Procs);
	// 0: wg.CompanionProcs.
	WGProcs   int
	Keepalive time.Duration
	// PeerGrace is how long a member that failed keeps its WireGuard peer
	// and route (mesh.TopologyOptions.DeadGrace).
	PeerGrace time.Duration
	// ResyncInterval is how often the rooms re-read the kernel state they
	// own and restore what differs (default 30s).
	ResyncInterval time.Duration
	SubnetGrace    time.Duration
	// VIPDrainTimeout is how long the new owner of a VIP forwards the
	// connections the old owner still carries, and how long a leaving
	// node waits for its own to end (lb/drain); 0 turns drains off.
	VIPDrainTimeout time.Duration
	// GARPInterval, when not zero, repeats gratuitous ARP for owned VIPs
	// (for switches with short forwarding-table timers).
	GARPInterval time.Duration
	// PolicyLogDrops logs packets NetworkPolicy drops (rate limited).
	PolicyLogDrops bool
	Timers         mesh.Timers
	// Exe is the path of this binary, for the userspace WireGuard companion.
	Exe string
	// UIAddr is where the dashboard and /metrics listen (host:port); empty
	// turns them off. A non-loopback address requires the cluster token.
	UIAddr string
	// NodePortRange is where node ports come from ("30000-32767" when
	// empty). Every node must use the same range.
	NodePortRange string
	// NodePortAddresses are where node ports are served: CIDRs, "primary"
	// (the addresses of the advertise address's interface, the default)
	// or "all".
	NodePortAddresses []string
	// Kubeconfig turns on Kubernetes mode: the objects come from this
	// API server (kube.Source) instead of the gossip store.
	Kubeconfig string
	// ServiceProxy is --service-proxy (Kubernetes mode): replace, labelled
	// or off.
	ServiceProxy string
	// CNIConflist, when set, is where the agent writes the CNI conflist
	// once its pod network is up (and removes it on leave).
	CNIConflist string
}

// settings is Config checked and parsed.
type settings struct {
	Config
	advertise   netip.Addr
	cidr        netip.Prefix
	serviceCIDR netip.Prefix
	mtu         int
	nodePorts   lb.PortRange
	// nodePortAddrs: local addresses in these prefixes serve node ports.
	nodePortAddrs []netip.Prefix
	proxyMode     kube.ProxyMode
}

func (c Config) check() (settings, error) {
	s := settings{Config: c}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return s, fmt.Errorf("--name not given and hostname unknown: %w", err)
		}
		s.Name = h
	}
	if len(s.Name) > 128 || strings.ContainsAny(s.Name, " /\t\n") {
		return s, fmt.Errorf("--name %q: use a host name (letters, digits, '-', '.'; at most 128)", s.Name)
	}
	p, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil {
		return s, fmt.Errorf("--cluster-cidr %q is not a CIDR (e.g. 10.244.0.0/16)", c.ClusterCIDR)
	}
	if p != p.Masked() {
		return s, fmt.Errorf("--cluster-cidr %s has host bits set; did you mean %s?", p, p.Masked())
	}
	// NetworkPolicy and the service proxy match IPv4; an IPv6 pod would be
	// reachable whatever its policies say.
	if !p.Addr().Is4() {
		return s, fmt.Errorf("--cluster-cidr %s: pod networks are IPv4 only (NetworkPolicy and services filter IPv4); use an IPv4 range such as 10.244.0.0/16", p)
	}
	s.cidr = p
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.96.0.0/16"
	}
	sp, err := netip.ParsePrefix(c.ServiceCIDR)
	if err != nil || sp != sp.Masked() || !sp.Addr().Is4() {
		return s, fmt.Errorf("--service-cidr %q is not an IPv4 CIDR without host bits (e.g. 10.96.0.0/16)", c.ServiceCIDR)
	}
	if sp.Overlaps(p) {
		return s, fmt.Errorf("--service-cidr %s overlaps --cluster-cidr %s; pick ranges that do not overlap", sp, p)
	}
	s.serviceCIDR = sp
	max := 30
	if c.NodeMask < p.Bits() || c.NodeMask > max {
		return s, fmt.Errorf("--node-mask %d must be between the cluster CIDR's /%d and /%d", c.NodeMask, p.Bits(), max)
	}
	switch c.WireGuard {
	case "auto", "kernel", "userspace":
	default:
		return s, fmt.Errorf("--wireguard %q: use auto, kernel or userspace", c.WireGuard)
	}
	if c.WGProcs < 0 {
		return s, fmt.Errorf("--wg-procs %d is negative: use 0 (half the CPUs) or a number of CPUs", c.WGProcs)
	}
	if c.GossipPort <= 0 || c.GossipPort > 65535 {
		return s, fmt.Errorf("--gossip-port %d is not a port", c.GossipPort)
	}
	if c.WGPort <= 0 || c.WGPort > 65535 {
		return s, fmt.Errorf("--wg-port %d is not a port", c.WGPort)
	}
	if c.WGIface == "" || len(c.WGIface) > 15 {
		return s, fmt.Errorf("--wg-iface %q must be 1 to 15 characters", c.WGIface)
	}
	if c.AdvertiseAddr != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddr)
		if err != nil {
			return s, fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr)
		}
		s.advertise = a
	} else {
		a, err := defaultRouteAddr()
		if err != nil {
			return s, err
		}
		s.advertise = a
	}
	s.mtu = underlayMTU(s.advertise) - 80
	s.nodePorts = lb.DefaultNodePortRange
	if c.NodePortRange != "" {
		r, err := lb.ParsePortRange(c.NodePortRange)
		if err != nil {
			return s, fmt.Errorf("--service-node-port-range: %w", err)
		}
		s.nodePorts = r
	}
	if s.nodePortAddrs, err = nodePortAddresses(c.NodePortAddresses, s.advertise); err != nil {
		return s, err
	}
	if s.DataDir == "" || s.RunDir == "" || s.Socket == "" {
		return s, errors.New("--data-dir, --run-dir and --socket must not be empty")
	}
	if s.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return s, fmt.Errorf("find own binary: %w", err)
		}
		s.Exe = exe
	}
	switch {
	case s.ResyncInterval < 0:
		return s, fmt.Errorf("--resync-interval %s: give a positive duration such as 30s", s.ResyncInterval)
	case s.ResyncInterval == 0:
		s.ResyncInterval = 30 * time.Second
	}
	if s.proxyMode, err = kube.ParseProxyMode(c.ServiceProxy); err != nil {
		return s, err
	}
	if s.Kubeconfig != "" {
		s.Kubeconfig, _ = filepath.Abs(s.Kubeconfig)
	}
	if s.CNIConflist != "" {
		s.CNIConflist, _ = filepath.Abs(s.CNIConflist)
	}
	s.DataDir, _ = filepath.Abs(s.DataDir)
	s.RunDir, _ = filepath.Abs(s.RunDir)
	s.Socket, _ = filepath.Abs(s.Socket)
	return s, nil
}

// nodePortAddresses resolves --nodeport-addresses: CIDRs as given,
// "all" as every address, "primary" (also the default) as the IPv4
// addresses of the interface holding the advertise address.
func nodePortAddresses(list []string, advertise netip.Addr) ([]netip.Prefix, error) {
	if len(list) == 0 {
		list = []string{"primary"}
	}
	var out []netip.Prefix
	for _, e := range list {
		switch e = strings.TrimSpace(e); e {
		case "all":
			out = append(out, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
		case "primary":
			out = append(out, netip.PrefixFrom(advertise, advertise.BitLen()))
			if l, err := linkOf(advertise); err == nil {
				addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
				for _, a := range addrs {
					if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() != advertise {
						out = append(out, netip.PrefixFrom(ip.Unmap(), 32))
					}
				}
			}
		default:
			p, err := netip.ParsePrefix(e)
			if err != nil || !p.Addr().Is4() {
				return nil, fmt.Errorf("--nodeport-addresses %q: give IPv4 CIDRs (e.g. 192.168.1.0/24), primary or all", e)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// defaultRouteAddr is the first global address of the interface that holds
// the default route.
func defaultRouteAddr() (netip.Addr, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read routes to find the advertise address: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("no default route to pick the advertise address from: pass --advertise-addr")
}

// underlayMTU is the MTU of the link holding addr, 1500 when unknown.
func underlayMTU(addr netip.Addr) int {
	if l, err := linkOf(addr); err == nil && l.Attrs().MTU > 0 {
		return l.Attrs().MTU
	}
	return 1500
}

// linkOf returns the link that holds addr.
func linkOf(addr netip.Addr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds the address %s", addr)
}
