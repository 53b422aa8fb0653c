// Package node is the netloom agent: it builds the subsystems (gossip,
// store, the snapshot hub and one controller per room), owns their
// lifetimes and serves the local API that the CLI and the CNI plugin use.
// Decisions live in the rooms' pure functions and controllers; this
// package is wiring.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/fwctl"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/ipam/ipamctl"
	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/lb/healthcheck"
	"github.com/netloom/netloom/lb/lbctl"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/meshctl"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/node/cni"
	"github.com/netloom/netloom/node/events"
	"github.com/netloom/netloom/node/metrics"
	"github.com/netloom/netloom/systemd"
	"github.com/prometheus/client_golang/prometheus"
)

// Agent is a running netloom node.
type Agent struct {
	cfg      settings
	log      *slog.Logger
	events   *events.Log
	metrics  *metrics.Metrics
	registry *prometheus.Registry

	// Set by Run before anything reads them.
	store   *store.Store
	repl    *store.Replicator
	members *mesh.Membership
	dev     *wg.Device
	table   *nft.Applier
	secret  []byte
	pubKey  string
	hub     *cluster.Hub
	lbc     *lbctl.Controller
	fwc     *fwctl.Controller
	meshc   *meshctl.Controller
	lbLoop  *cluster.Loop
	arp     announcerSlot

	// Kubernetes mode (--kubeconfig): the source of the objects and what
	// writes into the API; nil in standalone mode.
	kube        *kube.Source
	kubeClients *kube.Clients
	kubeWriter  *kube.Writer

	pods      *ipam.Allocator                // pods.json, read at start
	alloc     atomic.Pointer[ipam.Allocator] // pods, once the node has a subnet
	ready     atomic.Bool
	leaveOnce sync.Once
	leaveDone chan struct{}
}

// New checks the configuration and prepares an agent; Run starts it.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	s, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	a := &Agent{cfg: s, log: log, events: events.NewLog(s.Name, 1000), leaveDone: make(chan struct{}), registry: reg}
	m, err := metrics.New(reg, a)
	if err != nil {
		return nil, err
	}
	a.metrics = m
	return a, nil
}

// Events is the agent's recent events.
func (a *Agent) Events() *events.Log { return a.events }

// Run runs the agent until ctx ends (a restart: the data plane stays in
// place) or until a leave request (everything netloom made is removed).
func (a *Agent) Run(ctx context.Context) error {
	c := a.cfg
	for _, d := range []string{c.DataDir, c.RunDir, filepath.Dir(c.Socket)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	removeStaleTemps(c.DataDir)
	secret, err := loadSecret(c.Token, c.TokenFile, c.DataDir)
	if err != nil {
		return err
	}
	a.secret = secret
	if _, err := os.Stat(filepath.Join(c.DataDir, SecretFile)); errors.Is(err, os.ErrNotExist) {
		// Keep the token so that a restart needs no flag.
		if err := writeFileAtomic(filepath.Join(c.DataDir, SecretFile), []byte(Token(secret)+"\n"), 0o600); err != nil {
			return fmt.Errorf("store cluster secret: %w", err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	if err := noRedirects(c.advertise); err != nil {
		a.log.Warn("VIP drains: clients may be redirected to a VIP's old owner", "err", err)
	}
	priv, err := wg.LoadOrCreateKey(filepath.Join(c.DataDir, KeyFile))
	if err != nil {
		return err
	}
	a.pubKey = priv.PublicKey().String()

	st, err := store.Open(c.DataDir, c.Name, store.Options{})
	if err != nil {
		return err
	}
	a.store = st
	defer st.Close()
	// Read now, so that a damaged file stops the start before anything
	// changes; the subnet comes once the node has one.
	pods, err := ipam.OpenAllocator(filepath.Join(c.DataDir, PodsFile), netip.Prefix{})
	if err != nil {
		return err
	}
	a.pods = pods

	dev, err := wg.Open(ctx, wg.Config{Iface: c.WGIface, Mode: c.WireGuard, Port: c.WGPort, PrivateKey: priv, MTU: c.mtu, Exe: c.Exe, RunDir: c.RunDir, Procs: c.WGProcs}, a.log)
	if err != nil {
		return err
	}
	a.dev = dev
	a.table = nft.NewApplier()

	a.members = mesh.New(mesh.Config{
		Name: c.Name, AdvertiseAddr: c.advertise, Port: c.GossipPort,
		Key: GossipKey(secret), Timers: c.Timers, Log: a.log,
		OnEvent: a.memberEvent,
	})
	a.repl = store.NewReplicator(st, a.members)
	a.repl.OnRemote = func(changed []store.Entry) {
		for _, e := range changed {
			if e.Version.Node != c.Name {
				a.metrics.StoreSyncLag(time.Since(time.UnixMilli(e.Version.Wall)))
			}
		}
	}
	// The hub and the rooms exist before gossip starts: membership events
	// reach them from the first one.
	var src cluster.Source = cluster.NewStoreSource(st)
	if c.Kubeconfig != "" {
		if src, err = a.openKube(st); err != nil {
			dev.Close()
			return err
		}
	}
	a.hub = cluster.NewHub(cluster.HubConfig{Name: c.Name, LB: a.lbConfig(), SubnetGrace: c.SubnetGrace}, src, a.members)
	host := &cni.Host{Bridge: c.Bridge, MTU: c.mtu, ClusterCIDR: c.cidr, Ports: a.podPorts, Events: a.events, Log: a.log, Repaired: a.metrics.Repaired,
		Ready: func(p netip.Prefix) { a.hub.SetLocal(func(l *cluster.Local) { l.Bridge = p }) }}
	rooms := a.rooms(kernel{overlay: a.dev, table: a.table, host: host, drains: drain.NewKernel(nil)})
	if err := a.members.Start(a.repl, a.meta(cluster.Local{})); err != nil {
		dev.Close()
		return err
	}

	ln, err := a.listen()
	if err != nil {
		a.members.Shutdown()
		dev.Close()
		return err
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go srv.Serve(ln)
	defer srv.Close()

	a.log.Info("agent started", "node", c.Name, "address", c.advertise, "gossipPort", c.GossipPort,
		"wireguard", dev.Mode(), "iface", c.WGIface, "publicKey", a.pubKey, "socket", c.Socket)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	rejoin := func(ctx context.Context) error { return a.members.RunRejoin(ctx, c.Join) }
	if a.kube != nil {
		rooms = append(rooms, a.kube.Run, a.runKube)
	}
	for _, run := range append(rooms, a.hub.Run, a.runMeta, a.runReady, a.runAnnouncer, a.joinLoop, rejoin, a.runExpire, a.runTrim, a.runStartupPages,
		func(ctx context.Context) error { systemd.RunWatchdog(ctx); return nil }) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = run(runCtx)
		}()
	}
	a.serveUI(runCtx, c.UIAddr, a.registry)

	select {
	case <-ctx.Done():
		a.log.Info("agent stopping; the data plane stays in place")
		_ = systemd.Stopping()
		cancel()
		wg.Wait()
		a.members.Shutdown()
		a.dev.Close()
		return nil
	case <-a.leaveDone:
		return a.finishLeave(cancel, &wg)
	}
}

// kernel is what the rooms program: the WireGuard device, netloom's
// nftables table and the host side of pod attachment.
type kernel struct {
	overlay meshctl.Overlay
	table   fwctl.Table
	host    cluster.Controller
	// drains: the VIP drains' routes and conntrack (nil: none).
	drains fwctl.DrainKernel
}

// rooms builds one controller per room on a.hub and returns their loops'
// Run; each loop runs alone, so a slow room never stalls another.
func (a *Agent) rooms(k kernel) []func(context.Context) error {
	c := a.cfg
	w := storeWriter{repl: a.repl, st: a.store}
	loop := func(name string, ctl cluster.Controller, every time.Duration) *cluster.Loop {
		return cluster.NewLoop(a.hub, ctl, cluster.LoopOptions{Name: name, Every: every, Repair: c.ResyncInterval,
			Observe: a.metrics.ObserveReconcile, Log: a.log})
	}

	ipamc := ipamctl.New(ipamctl.Config{Name: c.Name, CIDR: c.cidr, Mask: c.NodeMask, Grace: c.SubnetGrace, Log: a.log}, w, a.events)
	ipamc.Subnet = a.setSubnet
	ipamc.Conflict = a.metrics.SubnetConflict
	ipamLoop := loop("ipam", ipamc, 5*time.Second)
	ipamc.After = func(d time.Duration) { time.AfterFunc(d, ipamLoop.Kick) }

	// The peer grace runs out with time: the mesh room looks every 5 s,
	// as the agent always did.
	a.meshc = meshctl.New(meshctl.Config{Name: c.Name, Keepalive: c.Keepalive, PeerGrace: c.PeerGrace, Log: a.log}, k.overlay, a.events)
	a.meshc.Repaired = a.metrics.Repaired
	// New owners announce a VIP once its drain is programmed (node/drain.go).
	gate := newAnnounceGate(&a.arp, c.Name)
	var as lbctl.Assignments = w
	if a.kubeWriter != nil {
		as = a.kubeWriter
	}
	a.lbc = lbctl.New(lbctl.Config{Name: c.Name, Log: a.log}, gate, as, a.events, lbctl.Hooks{Conflict: a.metrics.VIPConflict, Failover: a.metrics.VIPFailover})
	a.lbLoop = loop("lb", a.lbc, 0)
	a.lbc.After = func(d time.Duration) { time.AfterFunc(d, a.lbLoop.Kick) }
	a.fwc = fwctl.New(fwctl.Config{Name: c.Name, ClusterCIDR: c.cidr, Bridge: c.Bridge, WGIface: c.WGIface, LogDrops: c.PolicyLogDrops,
		NodePortAddresses: c.nodePortAddrs, Drain: c.drainConfig(), Log: a.log}, k.table, a.events)
	a.fwc.Repaired = a.metrics.Repaired
	fwLoop := loop("firewall", a.fwc, 0)
	if k.drains != nil {
		a.fwc.Drains = k.drains
	}
	a.fwc.After = func(d time.Duration) { time.AfterFunc(d, fwLoop.Kick) }
	a.fwc.Programmed = gate.programmed
	hcs := &healthcheck.Server{Healthy: a.proxyHealthy}
	hcLoop := loop("healthcheck", &healthcheck.Controller{Node: c.Name, Server: hcs, Log: a.log}, 0)
	return []func(context.Context) error{
		ipamLoop.Run,
		loop("local", k.host, 0).Run,
		loop("mesh", a.meshc, 5*time.Second).Run,
		a.lbLoop.Run,
		fwLoop.Run,
		func(ctx context.Context) error {
			err := hcLoop.Run(ctx)
			_ = hcs.Close()
			return err
		},
	}
}

// proxyHealthy reports whether the service proxy is current, for the
// health-check ports: the firewall room has programmed a snapshot at most
// a minute older than the newest (the room retries a failing apply, so a
// table that cannot be programmed makes it fall behind).
func (a *Agent) proxyHealthy() bool {
	st := a.fwc.Status()
	if st == nil || st.ProgrammedAt.IsZero() {
		return false
	}
	return a.hub.Latest().At.Sub(st.ProgrammedAt) < time.Minute
}

// lbConfig is the cluster-wide allocation configuration.
func (a *Agent) lbConfig() lb.Config {
	return lb.Config{ServiceCIDR: a.cfg.serviceCIDR, ClusterCIDR: a.cfg.cidr, NodePorts: a.cfg.nodePorts, FromAPI: a.cfg.Kubeconfig != ""}
}

// setSubnet takes the ipam room's answer: the subnet this node may use.
func (a *Agent) setSubnet(p netip.Prefix, why string, waiting, refused bool) {
	before := a.hub.Local()
	if p.IsValid() && p != before.Subnet {
		a.log.Info("pod subnet", "subnet", p)
		a.events.Add(events.SubnetClaimed, p.String(), "this node's pod subnet is "+p.String())
	}
	kind := events.SubnetFull
	if refused {
		kind = events.SubnetRefused
	}
	switch {
	case why == "" || why == before.SubnetErr:
	case waiting:
		a.log.Info("no pod subnet for this node yet", "waiting", why)
	case p.IsValid():
		a.log.Error("pod subnet", "subnet", p, "err", why)
		a.events.Add(kind, p.String(), why)
	default:
		a.log.Error("no pod subnet for this node", "err", why)
		a.events.Add(kind, "", why)
	}
	if p.IsValid() {
		if err := a.useSubnet(p); err != nil {
			a.log.Warn("pod address allocator", "err", err)
		}
	}
	a.hub.SetLocal(func(l *cluster.Local) { l.Subnet, l.SubnetErr, l.SubnetWaiting = p, why, waiting })
}

// useSubnet hands out pod addresses from subnet: the allocator Run read
// from pods.json moves there (nothing to do when it is there already) and
// takes CNI ADDs from then on.
func (a *Agent) useSubnet(subnet netip.Prefix) error {
	if err := a.pods.SetSubnet(subnet); err != nil {
		return err
	}
	a.alloc.Store(a.pods)
	return nil
}

// podPorts are the host veth names of the pods attached here.
func (a *Agent) podPorts() []string {
	al := a.alloc.Load()
	if al == nil {
		return nil
	}
	var out []string
	for id := range al.Allocations() {
		if cid, ifName, ok := splitPodID(id); ok {
			out = append(out, cni.HostVethName(cid, ifName))
		}
	}
	return out
}

// meta is what this node gossips about itself.
func (a *Agent) meta(l cluster.Local) mesh.Meta {
	m := mesh.Meta{Addr: a.cfg.advertise.String(), WGKey: a.pubKey, WGPort: a.cfg.WGPort, Version: Version, Leaving: l.Leaving}
	if l.Subnet.IsValid() {
		m.Subnet = l.Subnet.String()
	}
	return m
}

// runMeta gossips this node's metadata again whenever it changes.
func (a *Agent) runMeta(ctx context.Context) error {
	sub := a.hub.Subscribe()
	var last mesh.Meta
	for {
		if m := a.meta(a.hub.Local()); m != last {
			if err := a.members.SetMeta(m); err != nil {
				a.log.Warn("update node metadata", "err", err)
			} else {
				last = m
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
		case <-time.After(5 * time.Second):
		}
	}
}

// runReady says ready (pods may attach, systemd hears READY=1) once the
// node has heard the cluster, its subnet is won, the bridge holds its
// gateway and the overlay to every known member is programmed from it, so
// that no pod packet can leave before its route exists.
func (a *Agent) runReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s := a.hub.Latest()
		if s.Node.Joined && s.Node.Subnet.IsValid() && s.Node.Bridge == s.Node.Subnet && a.meshc.ProgrammedFor(s.Node.Subnet) {
			if err := a.writeConflist(); err != nil {
				a.log.Error("write the CNI conflist; pods cannot be attached until it is there", "err", err)
			}
			a.ready.Store(true)
			a.log.Info("node ready", "subnet", s.Node.Subnet)
			_ = systemd.Ready()
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// runExpire drops old tombstones from the store.
func (a *Agent) runExpire(ctx context.Context) error {
	return every(ctx, time.Hour, func() { a.store.Expire() })
}

// every calls f every period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f()
		}
	}
}

func (a *Agent) memberEvent(kind, node string) {
	switch kind {
	case "join":
		a.events.Add(events.Join, node, "member "+node+" joined")
		// A member (re)joining may have been on the other side of a
		// partition, where its clients learned another owner for our VIPs.
		a.lbc.Reannounce()
		a.lbLoop.Kick()
	case "leave":
		a.events.Add(events.Leave, node, "member "+node+" left the cluster")
	case "dead":
		a.events.Add(events.Dead, node, "member "+node+" failed (no answer to probes)")
	}
}

// listen opens the API socket, 0600, replacing a stale one.
func (a *Agent) listen() (net.Listener, error) {
	path := a.cfg.Socket
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another agent already listens on %s: stop it, or give this one another --socket", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s: %w", path, err)
	}
	return ln, nil
}

// handoverWait is how long a leaving node keeps forwarding for its VIPs
// after it told the others it is leaving, so that the new owners have
// announced them before it goes.
const handoverWait = 2 * time.Second

// requestLeave starts a graceful leave; Run finishes it and returns.
func (a *Agent) requestLeave() error {
	err := errors.New("this node is already leaving")
	a.leaveOnce.Do(func() {
		err = nil
		close(a.leaveDone)
	})
	return err
}

// finishLeave gives back the subnet, tells the cluster, and removes every
// link, route and nftables table this node made.
func (a *Agent) finishLeave(stopRooms context.CancelFunc, rooms *sync.WaitGroup) error {
	c := a.cfg
	a.log.Info("leaving the cluster", "node", c.Name)
	_ = systemd.Stopping()
	var errs []error
	// Hand the VIPs over first. This node stops answering ARP for them
	// before it tells the others it is leaving, so that no two nodes ever
	// answer for a VIP; the new owners announce as soon as they see it
	// leaving, while this node still forwards what reaches it (its rooms
	// keep running, and its own endpoints leave its proxy).
	owned := a.arp.Stop()
	a.hub.SetLocal(func(l *cluster.Local) { l.Leaving = true })
	if err := a.members.SetMeta(a.meta(a.hub.Local())); err != nil {
		errs = append(errs, err)
	}
	if owned > 0 {
		time.Sleep(handoverWait)
	}
	// The new owners forward here the packets of the connections this
	// node carries (lb/drain): keep the data plane until they end.
	a.drainLeave()
	dels := []store.Key{{Kind: cluster.KindLease, Name: c.Name}}
	for _, pa := range cluster.PodAddresses.List(a.store, "") {
		if pa.Value.Node == c.Name {
			dels = append(dels, pa.Key)
		}
	}
	if _, err := a.repl.Apply(nil, dels); err != nil {
		errs = append(errs, err)
	}
	// Let the tombstones ride a few gossip rounds before the leave message.
	time.Sleep(time.Second)
	if err := a.members.Leave(3 * time.Second); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	// The rooms stop before their state goes, or they would make it again.
	stopRooms()
	rooms.Wait()
	if err := a.dev.Destroy(); err != nil {
		errs = append(errs, err)
	}
	if err := cni.RemoveHost(c.Bridge, c.cidr); err != nil {
		errs = append(errs, err)
	}
	if c.CNIConflist != "" {
		if err := os.Remove(c.CNIConflist); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := a.table.Remove(firewall.TableFamily, firewall.TableName); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Join(c.DataDir, PeersFile))
	_ = os.Remove(filepath.Join(c.DataDir, PodsFile))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	a.log.Info("left the cluster; links, routes and nftables table removed", "node", c.Name)
	return nil
}
