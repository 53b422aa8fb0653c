package drain

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is the policy routing of one slot: packets marked Mark (under
// MarkMask) look up Table, whose default route goes via Via.
type Route struct {
	Slot  uint32
	Mark  uint32
	Table int
	Via   netip.Addr
}

// Routes are the policy routes of s, by slot. It is pure.
func Routes(s State) []Route {
	var out []Route
	for from, slot := range s.Slots {
		for _, d := range s.Drains {
			if d.From == from {
				out = append(out, Route{Slot: slot, Mark: Mark(slot), Table: TableBase + int(slot), Via: d.Via})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return int(a.Slot) - int(b.Slot) })
	return out
}

// Router programs the drains' ip rules and routing tables through a
// netlink handle (of a network namespace, or the agent's own).
type Router struct {
	nl *netlink.Handle
}

// NewRouter returns a Router on handle h (nil: the current namespace).
func NewRouter(h *netlink.Handle) *Router {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Router{nl: h}
}

// ownTable reports whether table t is one of the drains'.
func ownTable(t int) bool { return t > TableBase && t <= TableBase+MaxSlots }

// Set makes the drains' routing exactly routes: with prune unset it only
// adds and replaces (called before the firewall marks packets for a new
// slot), with prune set it also deletes the rules and routes of slots
// that are gone (after). Set with the same routes again is a no-op; errors
// are per route, joined.
func (r *Router) Set(routes []Route, prune bool) error {
	var errs []error
	rules, err := r.nl.RuleListFiltered(netlink.FAMILY_V4, &netlink.Rule{Priority: RulePriority}, netlink.RT_FILTER_PRIORITY)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list ip rules: %w", err)
	}
	have := map[int]netlink.Rule{}
	for _, ru := range rules {
		if ownTable(ru.Table) {
			have[ru.Table] = ru
		}
	}
	want := map[int]bool{}
	for _, rt := range routes {
		want[rt.Table] = true
		if err := r.route(rt); err != nil {
			errs = append(errs, err)
			continue
		}
		ru, ok := have[rt.Table]
		if ok && ru.Mark == rt.Mark && ru.Mask != nil && *ru.Mask == MarkMask {
			continue
		}
		if ok {
			if err := r.nl.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete ip rule of table %d: %w", rt.Table, err))
			}
		}
		if err := r.nl.RuleAdd(rule(rt)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add ip rule fwmark %#x/%#x lookup %d: %w", rt.Mark, MarkMask, rt.Table, err))
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for t, ru := range have {
		if want[t] {
			continue
		}
		if err := r.nl.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete ip rule of table %d: %w", t, err))
		}
	}
	// Routes of tables without a rule: left by a drain that ended, or by an
	// agent that stopped before it pruned.
	all, err := r.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return errors.Join(append(errs, fmt.Errorf("list routes: %w", err))...)
	}
	for _, rt := range all {
		if ownTable(rt.Table) && !want[rt.Table] {
			if err := r.nl.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route of table %d: %w", rt.Table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// route makes table rt.Table's default route go via rt.Via, which must be
// on-link (a gateway elsewhere would send the VIP's packets to a router
// that asks the LAN for the VIP, and so back here).
func (r *Router) route(rt Route) error {
	via := net.IP(rt.Via.AsSlice())
	got, err := r.nl.RouteGet(via)
	if err != nil || len(got) == 0 {
		return fmt.Errorf("drain to %s: no route to it: %v", rt.Via, err)
	}
	if got[0].Gw != nil {
		return fmt.Errorf("drain to %s: not on a directly connected network (reached via %s); its VIPs' connections cannot be forwarded to it", rt.Via, got[0].Gw)
	}
	nr := &netlink.Route{
		Dst:       &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Gw:        via,
		LinkIndex: got[0].LinkIndex,
		Table:     rt.Table,
		Protocol:  RouteProtocol,
	}
	if err := r.nl.RouteReplace(nr); err != nil {
		return fmt.Errorf("route table %d default via %s: %w", rt.Table, rt.Via, err)
	}
	return nil
}

// RouteProtocol marks the drains' routes (rtm_protocol 78, as netloom's
// other routes).
const RouteProtocol netlink.RouteProtocol = 78

func rule(rt Route) *netlink.Rule {
	ru := netlink.NewRule()
	ru.Family = unix.AF_INET
	ru.Priority = RulePriority
	ru.Table = rt.Table
	ru.Mark = rt.Mark
	mask := MarkMask
	ru.Mask = &mask
	return ru
}
