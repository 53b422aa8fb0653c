// Package fwctl is the data plane's controller: it compiles the service
// proxy and NetworkPolicy for this node (incrementally), merges them with
// the host's masquerade rules and programs netloom's nftables table in one
// transaction per change. A repair pass compares the kernel's table with
// what was applied and restores it when someone changed it.
package fwctl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/lb/proxy"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/node/events"
)

// Table is netloom's nftables table in the kernel.
type Table interface {
	// Apply makes the kernel's table exactly m in one transaction.
	Apply(m nft.Model) error
	// Drift compares the kernel's table with the last applied model and
	// says what differs ("" when nothing does, or nothing was applied).
	Drift() (string, error)
	// Invalidate makes the next Apply replace the whole table.
	Invalidate()
}

// Config configures a Controller.
type Config struct {
	Name        string
	ClusterCIDR netip.Prefix
	Bridge      string
	WGIface     string
	// LogDrops logs packets NetworkPolicy drops.
	LogDrops bool
	// NodePortAddresses are where node ports are served
	// (proxy.Input.NodePortAddresses).
	NodePortAddresses []netip.Prefix
	// Drain times the drains of the VIPs this node takes over (lb/drain;
	// a negative Timeout turns them off). They need Controller.Drains.
	Drain drain.Config
	Now   func() time.Time
	Log   *slog.Logger
}

// Status is what the room publishes after each applied pass.
type Status struct {
	// Policy is the compiled policy now in the kernel (nil before the
	// first apply).
	Policy *policy.Compiled
	// ProgrammedAt is the time of the newest snapshot whose table is in
	// the kernel.
	ProgrammedAt time.Time
}

// Controller programs the table.
type Controller struct {
	cfg    Config
	table  Table
	events events.Sink
	// Repaired is called when a repair pass restored the table.
	Repaired func(what string)
	// Drains is the kernel side of the VIP drains (nil: no drains).
	Drains DrainKernel
	// After asks for a pass in d (when a drain ends).
	After func(d time.Duration)
	// Programmed is called after the table of s is in the kernel (the ARP
	// announcer waits for the drain of a VIP this node takes over).
	Programmed func(s *cluster.Snapshot)

	polc   *policy.Compiler
	proxyc *proxy.Compiler
	// applied is what the table was last programmed from.
	applied key
	drain   drains

	status atomic.Pointer[Status]
	mu     sync.Mutex
	wake   chan struct{} // closed and replaced after each programmed pass
}

// key identifies the inputs of an applied table.
type key struct {
	lb     *cluster.LB
	policy *policy.Snapshot
	subnet netip.Prefix
	drains uint64
}

// New returns a controller.
func New(cfg Config, table Table, ev events.Sink) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, table: table, events: ev, Repaired: func(string) {},
		polc: policy.NewCompiler(policy.Options{LogDrops: cfg.LogDrops}), proxyc: proxy.NewCompiler(),
		wake: make(chan struct{})}
	c.status.Store(&Status{})
	return c
}

// Status is the newest published status (never nil).
func (c *Controller) Status() *Status { return c.status.Load() }

// ProxyInput is what the service proxy of node self is compiled from.
func ProxyInput(cfg Config, s *cluster.Snapshot) proxy.Input {
	in := proxy.Input{Node: cfg.Name, Endpoints: s.LB.Endpoints, ClusterCIDR: cfg.ClusterCIDR, PodSubnet: s.Node.Subnet, WGIface: cfg.WGIface,
		NodePortAddresses: cfg.NodePortAddresses}
	if cfg.Drain.Timeout >= 0 {
		// Connections a drain forwards to their old owner pass the proxy.
		in.PassMark = drain.MarkMask
	}
	in.Services = make([]proxy.ServiceAddrs, 0, len(s.Services))
	for _, svc := range s.Services {
		r := s.LB.Plan.Results[svc.Key()]
		in.Services = append(in.Services, proxy.ServiceAddrs{Service: svc, ClusterIP: r.ClusterIP, VIP: r.VIP, NodePorts: r.NodePorts})
	}
	return in
}

// Pass implements cluster.Controller.
func (c *Controller) Pass(ctx context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	subnet := s.Node.Subnet
	if !subnet.IsValid() || s.LB == nil || s.Policy == nil {
		return false, nil
	}
	c.stepDrains(s)
	force := false
	if repair && c.applied != (key{}) {
		drift, err := c.table.Drift()
		switch {
		case err != nil:
			c.cfg.Log.Warn("read nftables table to check it", "err", err)
			force = true
		case drift != "":
			c.cfg.Log.Warn("nftables table changed behind netloom's back; restoring", "drift", drift)
			c.events.Add(events.Repaired, "nftables", "nftables table inet netloom differed from what this node programmed ("+drift+"); restored")
			c.Repaired("firewall")
			force = true
		}
	}
	k := key{lb: s.LB, policy: s.Policy, subnet: subnet, drains: c.drain.gen}
	if k == c.applied && !force {
		// Nothing the table depends on changed: the kernel has it already.
		if repair {
			c.drainRoutes(true)
		}
		c.programmed(s, nil)
		return false, nil
	}
	if force {
		c.table.Invalidate()
	}
	pol := c.polc.Compile(s.Policy, c.cfg.Name)
	m := nft.Merge(
		firewall.Ruleset(firewall.Config{ClusterCIDR: c.cfg.ClusterCIDR, PodSubnet: subnet, Bridge: c.cfg.Bridge, WGIface: c.cfg.WGIface}),
		c.proxyc.Compile(ProxyInput(c.cfg, s)),
		pol.Model,
		c.drainFragment(),
	)
	// The routes of new drains exist before packets are marked for them.
	c.drainRoutes(false)
	c.applied = key{}
	if err := c.table.Apply(m); err != nil {
		// The kernel's table is unknown now: the retry replaces it whole.
		c.table.Invalidate()
		return true, fmt.Errorf("apply nftables table: %w", err)
	}
	c.applied = k
	c.drainRoutes(true)
	c.programmed(s, pol)
	return true, nil
}

// programmed publishes that the table of snapshot s is in the kernel, and
// wakes those waiting for it.
func (c *Controller) programmed(s *cluster.Snapshot, pol *policy.Compiled) {
	if c.Programmed != nil {
		defer c.Programmed(s)
	}
	at := s.At
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.status.Load()
	st := &Status{Policy: old.Policy, ProgrammedAt: old.ProgrammedAt}
	if pol != nil {
		st.Policy = pol
	}
	if at.After(st.ProgrammedAt) {
		st.ProgrammedAt = at
	}
	c.status.Store(st)
	close(c.wake)
	c.wake = make(chan struct{})
}

// WaitProgrammed waits (bounded by ctx) until the table of a snapshot
// taken after since is in the kernel: a pod registered at since is then
// filtered by its policies and known to the service proxy from its first
// packet.
func (c *Controller) WaitProgrammed(ctx context.Context, since time.Time) error {
	for {
		c.mu.Lock()
		done := c.status.Load().ProgrammedAt.After(since)
		ch := c.wake
		c.mu.Unlock()
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
