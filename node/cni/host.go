package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/node/events"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host is the controller of the node side of pod attachment: the pod
// bridge with the gateway address of the node's subnet, the unreachable
// route for the cluster CIDR (no pod packet ever leaves by the default
// route unencrypted), and the host veth of every attached pod plugged into
// the bridge. Each pass checks all three and puts back what someone
// removed.
type Host struct {
	Bridge      string
	MTU         int
	ClusterCIDR netip.Prefix
	// Ports lists the host veth names of the pods attached on this node.
	Ports  func() []string
	Events events.Sink
	Log    *slog.Logger
	// Repaired is called when a pass restored state an earlier pass had
	// made.
	Repaired func(what string)
	// Ready receives the subnet whose gateway the bridge holds after each
	// pass that made it so.
	Ready func(subnet netip.Prefix)

	ensured netip.Prefix // the subnet of the last pass that succeeded
}

// Pass implements cluster.Controller.
func (h *Host) Pass(ctx context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	subnet := s.Node.Subnet
	if !subnet.IsValid() {
		return false, nil
	}
	gw := netip.PrefixFrom(ipam.Gateway(subnet), subnet.Bits())
	var errs []error
	fixed, err := EnsureBridge(h.Bridge, gw, h.MTU)
	if err != nil {
		errs = append(errs, err)
	}
	missing, err := ensureClusterUnreachable(h.ClusterCIDR)
	if err != nil {
		errs = append(errs, err)
	} else if missing {
		fixed = append(fixed, "unreachable route for "+h.ClusterCIDR.String())
	}
	if len(errs) == 0 && h.Ports != nil {
		plugged, err := h.plugPorts()
		fixed = append(fixed, plugged...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	err = errors.Join(errs...)
	if h.ensured == subnet && len(fixed) > 0 {
		msg := "pod bridge " + h.Bridge + " and its routes differed from what this node made (" + strings.Join(fixed, ", ") + "); restored"
		h.log().Warn("pod bridge repaired", "fixed", fixed)
		if h.Events != nil {
			h.Events.Add(events.Repaired, h.Bridge, msg)
		}
		if h.Repaired != nil {
			h.Repaired("local")
		}
	}
	if err == nil {
		h.ensured = subnet
		if h.Ready != nil {
			h.Ready(subnet)
		}
	}
	return len(fixed) > 0, err
}

func (h *Host) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}

// plugPorts puts the host veths of attached pods that are not ports of
// the bridge (it was deleted and made again) back on it.
func (h *Host) plugPorts() ([]string, error) {
	br, err := netlinksafe.LinkByName(h.Bridge)
	if err != nil {
		return nil, fmt.Errorf("look up bridge %q: %w", h.Bridge, err)
	}
	var fixed []string
	var errs []error
	for _, name := range h.Ports() {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue // the pod is gone; CNI DEL cleans up
		}
		if l.Attrs().MasterIndex == br.Attrs().Index {
			continue
		}
		if err := plugHost(name, h.Bridge); err != nil {
			errs = append(errs, err)
			continue
		}
		fixed = append(fixed, "port "+name)
	}
	return fixed, errors.Join(errs...)
}

// ensureClusterUnreachable installs "unreachable <cluster CIDR>": traffic to
// a cluster address that has no more specific route (a remote node that is
// gone, or not yet known) is refused instead of leaving by the default route
// unencrypted. missing reports that it was not there.
func ensureClusterUnreachable(cidr netip.Prefix) (missing bool, err error) {
	r := clusterUnreachable(cidr)
	have, err := netlinksafe.RouteListFiltered(r.Family, r, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err == nil && len(have) > 0 {
		return false, nil
	}
	if err := netlink.RouteReplace(r); err != nil {
		return true, fmt.Errorf("install unreachable route for %s: %w", cidr, err)
	}
	return true, nil
}

// RemoveHost removes what Host made: the bridge and the unreachable route
// (a graceful leave).
func RemoveHost(bridge string, cidr netip.Prefix) error {
	var errs []error
	if l, err := netlinksafe.LinkByName(bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("remove bridge %s: %w", bridge, err))
		}
	}
	if err := netlink.RouteDel(clusterUnreachable(cidr)); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("remove unreachable route for %s: %w", cidr, err))
	}
	return errors.Join(errs...)
}

func clusterUnreachable(cidr netip.Prefix) *netlink.Route {
	family := netlink.FAMILY_V4
	if cidr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())},
		Type:     unix.RTN_UNREACHABLE,
		Protocol: wg.RouteProtocol,
		Family:   family,
		Table:    unix.RT_TABLE_MAIN,
	}
}
