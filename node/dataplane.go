package node

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"sort"
	"time"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/lb/arp"
	"github.com/netloom/netloom/lb/proxy"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

// dataplane computes load balancing and network policy from the store and
// programs them: one nftables transaction for the whole netloom table
// (masquerade, service proxy, policy), and the VIPs this node announces.
// ran is false when nothing the table depends on changed since it was last
// applied.
func (a *Agent) dataplane(subnet netip.Prefix) (ran bool, err error) {
	c := a.cfg
	started := time.Now()
	defer func() {
		if err == nil {
			a.markProgrammed(started)
		}
	}()
	st := a.computeLB()
	a.mu.Lock()
	seen := a.lbView.Gen == st.Gen && st.Gen != 0
	a.mu.Unlock()
	if !seen { // a new state (computeLB may have made it for an apply's validation)
		a.writeAssignments(st.Plan)
		a.noteLBChanges(st)
	}

	// Before it has heard the cluster a node would rank itself first for
	// every VIP: it announces nothing until it has joined.
	a.mu.Lock()
	joined, leaving, again := a.joined, a.leaving, a.reannounceNext
	a.reannounceNext = false
	an := a.announcer
	a.mu.Unlock()
	var owned []netip.Addr
	for vip, owner := range st.Owners {
		if owner == c.Name && joined && !leaving {
			owned = append(owned, vip)
		}
	}
	sort.Slice(owned, func(i, j int) bool { return owned[i].Less(owned[j]) })
	if an != nil {
		an.SetOwned(owned)
		if again {
			an.Reannounce()
		}
	}

	// Nothing the table depends on changed since the last applied pass:
	// the kernel has it already.
	snap := a.policySnapshot()
	key := tableKey{lb: st.Gen, snap: snap, subnet: subnet}
	a.mu.Lock()
	a.lbView = st
	same := a.applied == key
	a.mu.Unlock()
	if same {
		return false, nil
	}

	in := proxy.Input{Node: c.Name, Endpoints: st.Endpoints, ClusterCIDR: c.cidr, PodSubnet: subnet, WGIface: c.WGIface}
	for _, s := range st.Services {
		r := st.Plan.Results[s.Key()]
		in.Services = append(in.Services, proxy.ServiceAddrs{Service: s, ClusterIP: r.ClusterIP, VIP: r.VIP})
	}
	if a.polc == nil {
		a.polc = policy.NewCompiler(policy.Options{LogDrops: c.PolicyLogDrops})
		a.proxyc = proxy.NewCompiler()
	}
	pol := a.polc.Compile(snap, c.Name)
	m := firewall.Merge(
		firewall.Ruleset(firewall.Config{ClusterCIDR: c.cidr, PodSubnet: subnet, Bridge: c.Bridge, WGIface: c.WGIface}),
		a.proxyc.Compile(in),
		pol.Model,
	)
	a.mu.Lock()
	a.policyRun = pol
	a.applied = tableKey{}
	a.mu.Unlock()
	if err := a.fw.Apply(m); err != nil {
		return true, fmt.Errorf("apply nftables table: %w", err)
	}
	a.mu.Lock()
	a.applied = key
	a.mu.Unlock()
	return true, nil
}

// tableKey identifies the inputs of an applied table: the load-balancing
// state, the policy snapshot and the node's subnet.
type tableKey struct {
	lb     uint64
	snap   *policy.Snapshot
	subnet netip.Prefix
}

// conflictNote is an address conflict a service lost, and when.
type conflictNote struct {
	Text string
	At   time.Time
}

// conflictMemory is how long status keeps showing a resolved conflict.
const conflictMemory = 24 * time.Hour

// noteLBChanges logs and records VIP conflicts and owner changes.
func (a *Agent) noteLBChanges(st lbState) {
	a.mu.Lock()
	prev := a.lbView
	a.mu.Unlock()
	now := time.Now()
	exists := make(map[lb.ServiceKey]bool, len(st.Services))
	for _, s := range st.Services {
		exists[s.Key()] = true
		r := st.Plan.Results[s.Key()]
		old := prev.Plan.Results[s.Key()]
		if r.Conflict != "" && r.Conflict != old.Conflict {
			a.log.Warn("service address conflict", "service", s.Key().String(), "conflict", r.Conflict)
			a.events.Add(events.VIPConflict, s.Key().String(), "service "+s.Key().String()+": "+r.Conflict)
			a.metrics.VIPConflict()
			a.mu.Lock()
			if a.conflicts == nil {
				a.conflicts = map[lb.ServiceKey]conflictNote{}
			}
			a.conflicts[s.Key()] = conflictNote{Text: r.Conflict, At: now}
			a.mu.Unlock()
		}
		if r.Pending != "" && r.Pending != old.Pending {
			a.log.Warn("service pending", "service", s.Key().String(), "reason", r.Pending)
		}
	}
	a.mu.Lock()
	for k, c := range a.conflicts {
		if !exists[k] || now.Sub(c.At) > conflictMemory {
			delete(a.conflicts, k)
		}
	}
	a.mu.Unlock()
	for vip, owner := range st.Owners {
		was, had := prev.Owners[vip]
		if had && was != owner {
			a.log.Info("VIP moved", "vip", vip, "from", was, "to", owner)
			a.events.Add(events.VIPFailover, vip.String(), fmt.Sprintf("VIP %s moved from %s to %s", vip, was, owner))
			a.metrics.VIPFailover()
		}
	}
}

// conflictOf is the remembered address conflict of a service, "" if none.
func (a *Agent) conflictOf(k lb.ServiceKey) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conflicts[k].Text
}

// vipStatus lists the VIPs of the cluster for status.
func (a *Agent) vipStatus() []api.VIPStatus {
	a.mu.Lock()
	st := a.lbView
	a.mu.Unlock()
	out := []api.VIPStatus{}
	for _, s := range st.Services {
		r := st.Plan.Results[s.Key()]
		if !r.VIP.IsValid() {
			continue
		}
		out = append(out, api.VIPStatus{IP: r.VIP.String(), Service: s.Key().String(), Owner: st.Owners[r.VIP]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// serviceIssues lists the services that are pending or lost an address
// they asked for or held (in the last conflictMemory), for status.
func (a *Agent) serviceIssues() []api.ServiceIssue {
	a.mu.Lock()
	st := a.lbView
	conflicts := maps.Clone(a.conflicts)
	a.mu.Unlock()
	out := []api.ServiceIssue{}
	for _, s := range st.Services {
		r := st.Plan.Results[s.Key()]
		c, lost := conflicts[s.Key()]
		if r.Pending == "" && !lost {
			continue
		}
		is := api.ServiceIssue{Service: s.Key().String(), Pending: r.Pending}
		if lost {
			is.Conflict = c.Text
			at := c.At.UTC()
			is.ConflictAt = &at
		}
		out = append(out, is)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// runAnnouncer answers ARP for the VIPs this node owns on the underlay
// interface, restarting the announcer if its socket fails.
func (a *Agent) runAnnouncer(ctx context.Context) {
	iface, err := ifaceOf(a.cfg.advertise)
	if err != nil {
		a.log.Error("no ARP announcements for VIPs", "err", err)
		return
	}
	for {
		an := arp.NewAnnouncer(iface, a.log)
		an.SetGARPInterval(a.cfg.GARPInterval)
		a.mu.Lock()
		if prev := a.announcer; prev != nil {
			an.SetOwned(prev.Owned())
		}
		a.announcer = an
		a.mu.Unlock()
		a.poke()
		err := an.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("ARP announcer stopped; restarting", "iface", iface, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reannounce asks for gratuitous ARP for every owned VIP after the next
// pass (which sees the membership change first): after a partition heals,
// switches and clients may have learned another owner.
func (a *Agent) reannounce() {
	a.mu.Lock()
	a.reannounceNext = true
	a.mu.Unlock()
	a.poke()
}

// stopAnnouncing stops answering ARP for VIPs at once (a graceful leave:
// the new owners announce while this node still forwards what reaches it).
func (a *Agent) stopAnnouncing() {
	a.mu.Lock()
	an := a.announcer
	a.mu.Unlock()
	if an != nil {
		an.SetOwned(nil)
	}
}

// ifaceOf names the interface holding addr.
func ifaceOf(addr netip.Addr) (string, error) {
	l, err := linkOf(addr)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// markProgrammed records that the store as it was at start is in the
// kernel, and wakes those waiting for it.
func (a *Agent) markProgrammed(start time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if start.After(a.programmedAt) {
		a.programmedAt = start
	}
	if a.programmed != nil {
		close(a.programmed)
	}
	a.programmed = make(chan struct{})
}

// waitProgrammed waits (bounded by ctx) until a data plane pass that started
// after since has been applied: a pod attached at since is then filtered
// by its policies and known to the service proxy from its first packet.
func (a *Agent) waitProgrammed(ctx context.Context, since time.Time) error {
	a.poke()
	for {
		a.mu.Lock()
		done := a.programmedAt.After(since)
		if a.programmed == nil {
			a.programmed = make(chan struct{})
		}
		ch := a.programmed
		a.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
