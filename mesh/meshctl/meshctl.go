// Package meshctl is the mesh room's controller: it programs one WireGuard
// peer and one route per live member that holds a subnet, and puts back
// peers and routes that someone removed or changed by hand.
package meshctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/node/events"
)

// Overlay is the WireGuard device: each call makes the kernel's peers or
// routes equal to the list (the same list twice changes nothing) and
// returns how many it had to add, change or remove.
type Overlay interface {
	// Ensure makes the device exist and answer again when it does not (a
	// userspace companion that died), reporting true when it had to.
	Ensure(context.Context) (bool, error)
	SetPeers([]wg.Peer) (int, error)
	SetRoutes([]wg.Route) (int, error)
}

// Config configures a Controller.
type Config struct {
	Name string
	// Keepalive and PeerGrace: see mesh.TopologyOptions.
	Keepalive time.Duration
	PeerGrace time.Duration
	Now       func() time.Time
	Log       *slog.Logger
}

// Controller programs the overlay.
type Controller struct {
	cfg    Config
	ov     Overlay
	events events.Sink
	// Repaired is called when a pass had to restore kernel state that the
	// previous pass had programmed.
	Repaired func(what string)

	last *mesh.Topology
	// programmed is the subnet whose routes the last pass programmed
	// (invalid after a failure, or while routes wait for the bridge).
	programmed atomic.Pointer[netip.Prefix]
}

// New returns a controller.
func New(cfg Config, ov Overlay, ev events.Sink) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Controller{cfg: cfg, ov: ov, events: ev, Repaired: func(string) {}}
}

// Desired is the overlay node self must program for snapshot s at now.
// Until the node has heard the cluster after a start, ok is false: it
// leaves the peers and routes it finds in place rather than remove live
// ones.
func Desired(cfg Config, s *cluster.Snapshot, now time.Time) (t mesh.Topology, ok bool) {
	if !s.Node.Joined {
		return mesh.Topology{}, false
	}
	src := ipamGateway(s)
	return mesh.Desired(cfg.Name, s.Members, s.Subnets.ByNode, src,
		mesh.TopologyOptions{Keepalive: cfg.Keepalive, DeadGrace: cfg.PeerGrace, Now: now}), true
}

// ipamGateway is the address local traffic to remote pods leaves from: the
// gateway of this node's subnet on the pod bridge (invalid while the node
// has no subnet or the bridge does not hold it yet; then no routes are
// made).
func ipamGateway(s *cluster.Snapshot) (a netip.Addr) {
	if s.Node.Subnet.IsValid() && s.Node.Bridge == s.Node.Subnet {
		return ipam.Gateway(s.Node.Subnet)
	}
	return a
}

// ProgrammedFor reports whether the last pass programmed the whole overlay,
// routes from the gateway of subnet included.
func (c *Controller) ProgrammedFor(subnet netip.Prefix) bool {
	p := c.programmed.Load()
	return p != nil && *p == subnet && subnet.IsValid()
}

// Pass implements cluster.Controller.
func (c *Controller) Pass(ctx context.Context, s *cluster.Snapshot, repair bool) (bool, error) {
	topo, ok := Desired(c.cfg, s, c.cfg.Now())
	if !ok {
		return false, nil
	}
	if repair || c.last == nil {
		// A repair pass, or a retry after a failure: the device itself may
		// be gone.
		remade, err := c.ov.Ensure(ctx)
		if err != nil {
			c.last = nil
			c.programmed.Store(&netip.Prefix{})
			return false, fmt.Errorf("WireGuard device: %w", err)
		}
		if remade {
			msg := "the WireGuard device was gone or did not answer (its companion killed?); made it again with its peers and routes"
			c.cfg.Log.Warn("overlay repaired", "device", "remade")
			c.events.Add(events.Repaired, "wireguard", msg)
			c.Repaired("mesh")
			c.last = nil
		}
	}
	np, perr := c.ov.SetPeers(topo.Peers)
	if perr != nil {
		perr = fmt.Errorf("set WireGuard peers: %w", perr)
	}
	// Routes leave from the gateway on the pod bridge: until the bridge
	// holds it (a start, a new subnet), the routes found stay as they are
	// (after a restart they carry pod traffic).
	nr, rerr := 0, error(nil)
	if ipamGateway(s).IsValid() {
		nr, rerr = c.ov.SetRoutes(topo.Routes)
		if rerr != nil {
			rerr = fmt.Errorf("set routes to remote pod subnets: %w", rerr)
		}
	}
	err := errors.Join(perr, rerr)
	same := c.last != nil && reflect.DeepEqual(*c.last, topo)
	if same && np+nr > 0 {
		// What the previous pass programmed changed behind our back.
		msg := fmt.Sprintf("WireGuard peers or routes differed from what this node programmed (%d peers, %d routes fixed); restored", np, nr)
		c.cfg.Log.Warn("overlay repaired", "peers", np, "routes", nr)
		c.events.Add(events.Repaired, "wireguard", msg)
		c.Repaired("mesh")
	}
	if err == nil {
		c.last = &topo
	} else {
		c.last = nil
	}
	done := netip.Prefix{}
	if err == nil && ipamGateway(s).IsValid() {
		done = s.Node.Subnet
	}
	c.programmed.Store(&done)
	return np+nr > 0 || !same, err
}
