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
	// while it has none), after every pass.
	Subnet func(p netip.Prefix, why string)
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
		Subnet: func(netip.Prefix, string) {}, Conflict: func() {}, After: func(time.Duration) {}}
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
		if d.Put.Subnet != currentSubnet(s, c.cfg.Name) && !d.Lost.IsValid() {
			c.cfg.Log.Info("claiming pod subnet", "subnet", d.Put.Subnet)
		}
		if err = c.leases.PutLease(*d.Put); err != nil {
			err = fmt.Errorf("store subnet lease: %w", err)
		}
	}
	if !d.Keep {
		c.Subnet(d.Subnet, d.Why)
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
