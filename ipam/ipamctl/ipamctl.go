// Package ipamctl is the ipam room's controller: it keeps this node's
// claim on a pod subnet (claim, renew, give up a lost conflict) and
// publishes the subnet the node may use.
package ipamctl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/node/events"
)

// Leases is where the controller writes this node's lease (the store).
type Leases interface {
	PutLease(ipam.Lease) error
	DeleteLease(node string) error
}

// Config configures a Controller.
type Config struct {
	Name string
	CIDR netip.Prefix
	Mask int
	// Grace is how long a node that is not alive keeps its subnet; leases
	// are renewed four times per Grace (at most hourly).
	Grace time.Duration
	// Settle is how long a fresh claim waits for a competing one to arrive
	// by gossip before the node uses it (default 1s).
	Settle time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Controller keeps the lease; see Decide.
type Controller struct {
	cfg    Config
	leases Leases
	events events.Sink
	// Subnet receives the subnet the node may use (invalid, with a reason,
	// while it has none; waiting when that reason is the cluster not having
	// assigned one yet rather than a fault; refused when it is the subnet
	// the cluster assigned that cannot be used), after every pass.
	Subnet func(p netip.Prefix, why string, waiting, refused bool)
	// Conflict is called when this node lost a subnet to an earlier claim.
	Conflict func()
	// After asks for another pass after d (a settling claim).
	After func(d time.Duration)
}

// New returns a controller.
func New(cfg Config, leases Leases, ev events.Sink) *Controller {
	if cfg.Settle <= 0 {
		cfg.Settle = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Controller{cfg: cfg, leases: leases, events: ev,
		Subnet: func(netip.Prefix, string, bool, bool) {}, Conflict: func() {}, After: func(time.Duration) {}}
}

// Decision is what one pass does.
type Decision struct {
	// Put is the lease to write (nil: none).
	Put *ipam.Lease
	// Withdraw deletes this node's lease (it lost, and has nothing else).
	Withdraw bool
	// Subnet is the subnet the node may use now (invalid: none); Why says
	// why there is none. With Keep the node goes on with what it uses
	// (a claim is settling).
	Subnet netip.Prefix
	Why    string
	Keep   bool
	// Waiting: Why is the cluster not having assigned a subnet yet.
	Waiting bool
	// Refused: Why is that the subnet the cluster assigned
	// (spec.podCIDR) cannot be used.
	Refused bool
	// Lost is the subnet lost to Winner's earlier claim (invalid: none).
	Lost   netip.Prefix
	Winner string
	// Again asks for another pass after this long (0: none needed).
	Again time.Duration
}

// Decide is the pure decision of one pass for node cfg.Name at now.
func Decide(cfg Config, s *cluster.Snapshot, now time.Time) Decision {
	t := s.Subnets
	own, won := t.ByNode[cfg.Name]
	if !s.Node.Joined {
		// A restart: the persisted lease gives the subnet back before the
		// cluster answers; nothing new is claimed until it has.
		if won {
			return Decision{Subnet: own}
		}
		return Decision{Keep: true}
	}
	if s.Node.Leaving {
		// The node gives its lease back: nothing is claimed or renewed.
		return Decision{Keep: true}
	}
	cur := ipam.Lease{Node: cfg.Name}
	for _, l := range s.Leases {
		if l.Node == cfg.Name {
			cur = l
		}
	}
	renew := min(cfg.Grace/4, time.Hour)
	seq := uint32(0)
	if cur.Claimed == now.UnixMilli() {
		seq = cur.ClaimedSeq + 1
	}
	if p := s.NodeSubnet.Assigned; p.IsValid() {
		return decideAssigned(cfg, s, cur, p, now, seq, renew)
	}
	if cur.Assigned && won && own == cur.Subnet {
		// Assigned once, and the source does not say otherwise now (a
		// saved view from before): kept.
		return Decision{Put: renewed(cur, now, renew), Subnet: own}
	}
	if w := s.NodeSubnet.Wait; w != "" && !(won && own == cur.Subnet) {
		// The cluster assigns subnets: none is picked meanwhile (a
		// picked one already in use is kept until the assigned one comes).
		return Decision{Why: w, Waiting: true}
	}
	next, err := ipam.Claim(cfg.CIDR, cfg.Mask, t, cur, now, seq, renew)
	if err != nil {
		// A lost lease is withdrawn so that it does not hold the winner back.
		return Decision{Withdraw: !won && cur.Subnet.IsValid(), Why: err.Error() + "; retrying"}
	}
	var d Decision
	if next != cur {
		d.Put = &next
		if cur.Subnet.IsValid() && next.Subnet != cur.Subnet {
			d.Lost, d.Winner = cur.Subnet, t.Owner[cur.Subnet]
		}
	}
	if won && own == next.Subnet {
		// A fresh claim is used once it has had time to meet a competing
		// one by gossip; a restart's old lease is used at once.
		if age := now.Sub(time.UnixMilli(next.Claimed)); age < cfg.Settle {
			d.Again, d.Keep = cfg.Settle-age, true
			return d
		}
		d.Subnet = own
		return d
	}
	// A fresh claim is ours once the cluster has seen it without a
	// conflict: a later pass, after its gossip, resolves again.
	d.Keep, d.Again = true, cfg.Settle/4
	return d
}

// decideAssigned is Decide for a node the cluster assigned subnet p: it
// holds p in an assigned lease (which wins over every picked one) and uses
// it at once: no claim of another node can take it.
func decideAssigned(cfg Config, s *cluster.Snapshot, cur ipam.Lease, p netip.Prefix, now time.Time, seq uint32, renew time.Duration) Decision {
	if err := checkAssigned(cfg, p); err != nil {
		// Bad input changes nothing: a subnet in use stays.
		if own, ok := s.Subnets.ByNode[cfg.Name]; ok && own == cur.Subnet {
			return Decision{Put: renewed(cur, now, renew), Subnet: own, Why: err.Error() + "; keeping " + own.String(), Refused: true}
		}
		return Decision{Why: err.Error(), Refused: true}
	}
	p = p.Masked()
	if !cur.Assigned || cur.Subnet != p {
		nowMs := now.UnixMilli()
		next := ipam.Lease{Node: cfg.Name, Subnet: p, Claimed: nowMs, ClaimedSeq: seq, Renewed: nowMs, Assigned: true}
		// Used once the snapshot holds it and it won (the next pass).
		return Decision{Put: &next, Keep: true, Again: cfg.Settle / 4}
	}
	d := Decision{Put: renewed(cur, now, renew)}
	if own, ok := s.Subnets.ByNode[cfg.Name]; ok && own == p {
		d.Subnet = p
		return d
	}
	holder := ""
	for q, n := range s.Subnets.Owner {
		if q.Overlaps(p) {
			holder = n
		}
	}
	d.Refused = true
	d.Why = fmt.Sprintf("the pod subnet %s the cluster assigned to node %s (spec.podCIDR) is also assigned to node %s; it frees when that node leaves (netloom leave) or its lease lapses", p, cfg.Name, holder)
	return d
}

// checkAssigned says why node cfg.Name cannot use the subnet p the cluster
// assigned it.
func checkAssigned(cfg Config, p netip.Prefix) error {
	switch {
	case !p.Addr().Is4():
		return fmt.Errorf("node %s: spec.podCIDR %s is not IPv4; netloom serves IPv4 pod networks: give kube-controller-manager an IPv4 --cluster-cidr", cfg.Name, p)
	case p.Bits() < cfg.CIDR.Bits() || !cfg.CIDR.Contains(p.Addr()):
		return fmt.Errorf("node %s: spec.podCIDR %s is outside netloom's cluster CIDR %s: start the agents with --cluster-cidr set to kube-controller-manager's --cluster-cidr", cfg.Name, p, cfg.CIDR)
	case p.Bits() > 30:
		return fmt.Errorf("node %s: spec.podCIDR %s has no room for pods: give kube-controller-manager a --node-cidr-mask-size of at most 30", cfg.Name, p)
	}
	return nil
}

// renewed is cur renewed at now (ipam.Renew), nil when that changes
// nothing to write.
func renewed(cur ipam.Lease, now time.Time, renew time.Duration) *ipam.Lease {
	if next := ipam.Renew(cur, now, renew); next != cur {
		return &next
	}
	return nil
}

// Pass implements cluster.Controller.
func (c *Controller) Pass(ctx context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	d := Decide(c.cfg, s, c.cfg.Now())
	var err error
	if d.Withdraw {
		if err = c.leases.DeleteLease(c.cfg.Name); err != nil {
			err = fmt.Errorf("withdraw subnet lease: %w", err)
		}
	}
	if d.Lost.IsValid() {
		c.cfg.Log.Warn("subnet conflict lost; claiming another", "lost", d.Lost, "winner", d.Winner, "claim", d.Put.Subnet)
		c.Conflict()
		c.events.Add(events.SubnetConflict, d.Lost.String(), fmt.Sprintf("subnet %s also claimed by %s, who claimed it first; this node claims %s", d.Lost, d.Winner, d.Put.Subnet))
	}
	if d.Put != nil {
		switch {
		case d.Put.Subnet == currentSubnet(s, c.cfg.Name) || d.Lost.IsValid():
		case d.Put.Assigned:
			c.cfg.Log.Info("taking the pod subnet the cluster assigned (spec.podCIDR)", "subnet", d.Put.Subnet)
		default:
			c.cfg.Log.Info("claiming pod subnet", "subnet", d.Put.Subnet)
		}
		if err = c.leases.PutLease(*d.Put); err != nil {
			err = fmt.Errorf("store subnet lease: %w", err)
		}
	}
	if !d.Keep {
		c.Subnet(d.Subnet, d.Why, d.Waiting, d.Refused)
	}
	if d.Again > 0 {
		c.After(d.Again)
	}
	return d.Put != nil || d.Withdraw, err
}

func currentSubnet(s *cluster.Snapshot, node string) netip.Prefix {
	for _, l := range s.Leases {
		if l.Node == node {
			return l.Subnet
		}
	}
	return netip.Prefix{}
}
