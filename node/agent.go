// Package node is the netloom agent: it builds the subsystems (gossip,
// store, subnet agreement, WireGuard overlay, firewall), owns their
// lifetimes, runs their reconcile loops and serves the local API that the
// CLI and the CNI plugin use.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/lb/arp"
	"github.com/netloom/netloom/lb/proxy"
	"github.com/netloom/netloom/mesh"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/mesh/wg"
	"github.com/netloom/netloom/node/events"
	"github.com/netloom/netloom/systemd"
	"github.com/netloom/netloom/webui"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// Store kinds the agent writes itself (users write Namespace, Pod, ...).
const (
	KindLease   = "SubnetLease"
	KindPodAddr = "PodAddress"
)

// PodAddress records where a pod attached: written by the node that ran CNI
// ADD, read by every node (policies and services need pod IPs).
type PodAddress struct {
	Node        string `json:"node"`
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Agent is a running netloom node.
type Agent struct {
	cfg settings
	log *slog.Logger

	store   *store.Store
	repl    *store.Replicator
	members *mesh.Membership
	dev     *wg.Device
	fw      *firewall.Applier
	secret  []byte
	pubKey  string
	events  *events.Log
	// metrics are the agent's hooks into /metrics, gathered in registry.
	metrics  *webui.Metrics
	registry *prometheus.Registry

	mu        sync.Mutex
	subnet    netip.Prefix
	subnetErr string
	alloc     *ipam.Allocator
	joined    bool
	settled   bool
	ready     bool
	leaving   bool
	lbView    lbState
	// conflicts remembers the last address conflict of each service (the
	// allocation reports one only in the pass that resolves it).
	conflicts map[lb.ServiceKey]conflictNote
	// objs caches decoded objects and derived state between passes.
	objs *objCaches
	// polc and proxyc compile network policy and the service proxy
	// incrementally; only passes use them.
	polc   *policy.Compiler
	proxyc *proxy.Compiler
	// applied is what the nftables table was last programmed from.
	applied   tableKey
	policyRun *policy.Compiled
	announcer *arp.Announcer
	// reannounceNext asks the next pass to send gratuitous ARP for owned VIPs.
	reannounceNext bool
	// programmedAt is when the newest applied data plane pass started;
	// programmed is closed (and replaced) after each such pass.
	programmedAt time.Time
	programmed   chan struct{}
	lastMeta     mesh.Meta
	leaveDone    chan struct{}
	kick         chan struct{}
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
	return &Agent{cfg: s, log: log, events: events.NewLog(s.Name, 1000), leaveDone: make(chan struct{}), kick: make(chan struct{}, 1), objs: newObjCaches(),
		metrics: webui.NewMetrics(reg), registry: reg}, nil
}

// Run runs the agent until ctx ends (a restart: the data plane stays in
// place) or until a leave request (everything netloom made is removed).
func (a *Agent) Run(ctx context.Context) error {
	c := a.cfg
	for _, d := range []string{c.DataDir, c.RunDir, filepath.Dir(c.Socket)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
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

	priv, err := wg.LoadOrCreateKey(filepath.Join(c.DataDir, "wireguard.key"))
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

	dev, err := wg.Open(ctx, wg.Config{Iface: c.WGIface, Mode: c.WireGuard, Port: c.WGPort, PrivateKey: priv, MTU: c.mtu, Exe: c.Exe, RunDir: c.RunDir}, a.log)
	if err != nil {
		return err
	}
	a.dev = dev
	a.fw = firewall.NewApplier()

	// A node that restarts gets its old subnet back from its persisted lease.
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
	if err := a.members.Start(a.repl, a.meta()); err != nil {
		dev.Close()
		return err
	}

	ln, err := a.listen()
	if err != nil {
		a.members.Shutdown()
		dev.Close()
		return err
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	a.log.Info("agent started", "node", c.Name, "address", c.advertise, "gossipPort", c.GossipPort,
		"wireguard", dev.Mode(), "iface", c.WGIface, "publicKey", a.pubKey, "socket", c.Socket)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.joinLoop(runCtx)
	go systemd.RunWatchdog(runCtx)
	go a.runAnnouncer(runCtx)
	a.serveUI(runCtx, c.UIAddr, a.registry)

	storeKick, unsub := st.Subscribe()
	defer unsub()
	resync := time.NewTicker(5 * time.Second)
	defer resync.Stop()
	expire := time.NewTicker(time.Hour)
	defer expire.Stop()
	for {
		a.reconcile()
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping; the data plane stays in place")
			_ = systemd.Stopping()
			a.members.Shutdown()
			a.dev.Close()
			return nil
		case <-a.leaveDone:
			return a.finishLeave()
		case <-storeKick:
		case <-a.members.Changes():
		case <-a.kick:
		case <-resync.C:
		case <-expire.C:
			st.Expire()
		}
		// A burst of changes becomes one pass.
		time.Sleep(100 * time.Millisecond)
	}
}

// Events is the agent's recent events.
func (a *Agent) Events() *events.Log { return a.events }

func (a *Agent) memberEvent(kind, node string) {
	switch kind {
	case "join":
		a.events.Add(events.Join, node, "member "+node+" joined")
		// A member (re)joining may have been on the other side of a
		// partition, where its clients learned another owner for our VIPs.
		a.reannounce()
	case "leave":
		a.events.Add(events.Leave, node, "member "+node+" left the cluster")
	case "dead":
		a.events.Add(events.Dead, node, "member "+node+" failed (no answer to probes)")
	}
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
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

// joinLoop contacts --join addresses and the members this node knew before
// a restart, retrying until one answers.
func (a *Agent) joinLoop(ctx context.Context) {
	peersFile := filepath.Join(a.cfg.DataDir, "peers.json")
	var known []string
	if b, err := os.ReadFile(peersFile); err == nil {
		_ = json.Unmarshal(b, &known)
	}
	addrs := append(append([]string{}, a.cfg.Join...), known...)
	self := a.members.LocalAddr().String()
	var targets []string
	for _, t := range addrs {
		if t != "" && t != self && t != a.cfg.advertise.String() {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		// A restart that lost its peer list: the WireGuard peers still on
		// the device are the cluster's nodes; their gossip is likely on
		// this node's port.
		targets = a.peerGuesses()
	}
	if len(targets) == 0 {
		a.joinAlone(ctx)
	}
	delay := time.Second
	startedAt := time.Now()
	logged := false
	for len(targets) > 0 {
		n, err := a.members.Join(targets)
		if n > 0 {
			a.log.Info("joined cluster", "contacted", n)
			a.setJoined()
			break
		}
		if !logged || time.Since(startedAt) > time.Minute {
			a.log.Warn("cannot join the cluster yet; retrying", "err", err)
			logged, startedAt = true, time.Now()
		}
		if time.Since(startedAt) > 10*time.Second && !mesh.IsTokenRefused(err) {
			// Nobody answered for a while: go on alone rather than hold the
			// data plane back; joining continues in the background. A
			// member that refused our token is a configuration error, not
			// an outage: this node waits for the right token.
			a.setJoined()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
	}
	// Remember who is in the cluster, for the next start: soon after it
	// changes, so that a restart shortly after the cluster formed finds it.
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	saved := ""
	for {
		saved = a.savePeers(peersFile, saved)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// peerGuesses are join targets from the WireGuard peers on the device: each
// endpoint's address with this node's gossip port.
func (a *Agent) peerGuesses() []string {
	stats, err := a.dev.Stats()
	if err != nil {
		a.log.Warn("no WireGuard peers to guess members from", "err", err)
		return nil
	}
	var out []string
	for _, ps := range stats {
		if ps.Endpoint.IsValid() {
			out = append(out, netip.AddrPortFrom(ps.Endpoint.Addr(), uint16(a.cfg.GossipPort)).String())
		}
	}
	sort.Strings(out)
	return out
}

// joinAlone handles a start without anybody to join. A new cluster's first
// node is joined at once. A node that was in a cluster before (its store
// holds other nodes' subnet leases) but knows no address to call waits
// until the others reach it (their probes and push/pull find it) or 10 s
// pass, keeping the peers and routes it finds meanwhile: before, it
// programmed an empty overlay at once and cut its pods off.
func (a *Agent) joinAlone(ctx context.Context) {
	others := false
	for _, l := range a.leases() {
		if l.Node != a.cfg.Name {
			others = true
		}
	}
	if others {
		a.log.Info("no member address known; waiting for the cluster to reach this node")
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && len(a.members.Alive()) < 2 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	a.setJoined()
}

// savePeers writes the alive members' gossip addresses when they differ
// from what was saved (saved) and returns what the file now holds.
func (a *Agent) savePeers(path, saved string) string {
	var list []string
	for _, m := range a.members.Members() {
		if !m.Self && m.State == mesh.StateAlive {
			list = append(list, netip.AddrPortFrom(m.Addr, uint16(m.Port)).String())
		}
	}
	if len(list) == 0 {
		return saved
	}
	sort.Strings(list)
	b, _ := json.Marshal(list)
	if string(b) == saved {
		return saved
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return saved
	}
	return string(b)
}

func (a *Agent) setJoined() {
	a.mu.Lock()
	a.joined = true
	a.mu.Unlock()
	a.poke()
}

// handoverWait is how long a leaving node keeps forwarding for its VIPs
// after it told the others it is leaving, so that the new owners have
// announced them before it goes.
const handoverWait = 2 * time.Second

// requestLeave starts a graceful leave; Run finishes it and returns.
func (a *Agent) requestLeave() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving {
		return errors.New("this node is already leaving")
	}
	a.leaving = true
	close(a.leaveDone)
	return nil
}

// finishLeave gives back the subnet, tells the cluster, and removes every
// link, route and nftables table this node made.
func (a *Agent) finishLeave() error {
	c := a.cfg
	a.log.Info("leaving the cluster", "node", c.Name)
	_ = systemd.Stopping()
	var errs []error
	// Hand the VIPs over first. This node stops answering ARP for them
	// before it tells the others it is leaving, so that no two nodes ever
	// answer for a VIP; the new owners announce as soon as they see it
	// leaving, while this node still forwards what reaches it.
	a.mu.Lock()
	owned := 0
	if a.announcer != nil {
		owned = len(a.announcer.Owned())
	}
	a.mu.Unlock()
	a.stopAnnouncing()
	if err := a.members.SetMeta(a.meta()); err != nil {
		errs = append(errs, err)
	}
	if owned > 0 {
		time.Sleep(handoverWait)
		a.reconcile()
	}
	dels := []store.Key{{Kind: KindLease, Name: c.Name}}
	for _, e := range a.store.List(KindPodAddr, "") {
		var pa PodAddress
		if json.Unmarshal(e.Value, &pa) == nil && pa.Node == c.Name {
			dels = append(dels, e.Key)
		}
	}
	if entries, err := a.store.Apply(nil, dels); err != nil {
		errs = append(errs, err)
	} else {
		a.repl.Publish(entries)
	}
	// Let the tombstones ride a few gossip rounds before the leave message.
	time.Sleep(time.Second)
	if err := a.members.Leave(3 * time.Second); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	if err := a.dev.Destroy(); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(c.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("remove bridge %s: %w", c.Bridge, err))
		}
	}
	if err := a.fw.Remove(); err != nil {
		errs = append(errs, err)
	}
	if err := removeClusterUnreachable(c.cidr); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Join(c.DataDir, "peers.json"))
	_ = os.Remove(filepath.Join(c.DataDir, "pods.json"))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	a.log.Info("left the cluster; links, routes and nftables table removed", "node", c.Name)
	return nil
}
