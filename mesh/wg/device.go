package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Modes of a Device.
const (
	ModeAuto      = "auto"
	ModeKernel    = "kernel"
	ModeUserspace = "userspace"
)

// Defaults applied by Open for zero Config fields.
const (
	DefaultPort   = 51820
	DefaultMTU    = 1420
	DefaultRunDir = "/run/netloom"
)

// RouteProtocol marks the routes this package owns (rtm_protocol 78,
// "netloom"; shown by `ip route` as "proto 78").
const RouteProtocol netlink.RouteProtocol = 78

// Config describes the WireGuard device of this node.
type Config struct {
	// Iface is the link name, at most 15 bytes. It must be unique on the
	// machine, not only in the network namespace, because the UAPI socket
	// /var/run/wireguard/<Iface>.sock lives in the shared file system.
	Iface string
	// Mode is auto (default), kernel or userspace.
	Mode string
	// Port is the UDP listen port, default 51820.
	Port       int
	PrivateKey wgtypes.Key
	// MTU of the link, default 1420.
	MTU int
	// Exe is the netloom binary started as the userspace companion;
	// default os.Executable().
	Exe string
	// RunDir holds the companion's pid file and log; default /run/netloom.
	RunDir string
	// Procs is how many threads the userspace companion runs Go code on
	// at once (its GOMAXPROCS); 0 means CompanionProcs of the CPUs this
	// process may use. A companion that is adopted keeps the value it was
	// started with.
	Procs int
}

// CompanionProcs is the default GOMAXPROCS of the userspace companion on a
// machine where cpus CPUs are usable: half of them, at least one. The
// tunnel shares its node with the pods whose traffic it carries: on the
// sending node the pod's TCP stack and the companion's encryption run at
// the same time, on the receiving node decryption and the pod's reads.
// With every CPU to itself, wireguard-go's workers hand each batch from
// thread to thread and the runtime spins idle threads looking for work,
// which costs the pods the CPU it burns; on a 2-CPU machine one thread
// carried 1.14x the pod-to-pod throughput at 0.80x the CPU per byte
// (BENCHMARKS.md, section 1).
func CompanionProcs(cpus int) int {
	return max(1, cpus/2)
}

func (c Config) withDefaults() (Config, error) {
	if err := validIface(c.Iface); err != nil {
		return c, err
	}
	switch c.Mode {
	case "":
		c.Mode = ModeAuto
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		return c, fmt.Errorf("WireGuard mode %q is not valid: use auto, kernel or userspace", c.Mode)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65535 {
		return c, fmt.Errorf("WireGuard port %d is not valid: use 1-65535", c.Port)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return c, fmt.Errorf("WireGuard MTU %d is not valid: use 576-65535", c.MTU)
	}
	if c.PrivateKey == (wgtypes.Key{}) {
		return c, errors.New("WireGuard private key is empty: load one with LoadOrCreateKey")
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.Procs < 0 {
		return c, fmt.Errorf("WireGuard companion threads %d is not valid: use 0 (half the CPUs) or more", c.Procs)
	}
	if c.Procs == 0 {
		c.Procs = CompanionProcs(runtime.GOMAXPROCS(0))
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("find netloom executable for wg-companion: %w (set the path explicitly)", err)
		}
		c.Exe = exe
	}
	return c, nil
}

func validIface(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n:") || name == "." || name == ".." {
		return fmt.Errorf("WireGuard interface name %q is not valid: use 1-15 characters without '/', ':' or spaces", name)
	}
	return nil
}

// PeerStats is what the device reports about one peer.
type PeerStats struct {
	Endpoint      netip.AddrPort // zero when unknown
	LastHandshake time.Time      // zero when there was none
	RxBytes       int64
	TxBytes       int64
}

// Device is an open WireGuard link. Its methods are safe for concurrent use.
// The netlink and wgctrl handles are bound to the network namespace that was
// current when Open ran.
type Device struct {
	mu   sync.Mutex
	cfg  Config
	log  *slog.Logger
	mode string
	nl   *netlink.Handle
	wg   *wgctrl.Client
	comp *companion // userspace: the companion, if known
}

// Open adopts the link cfg.Iface when it exists, without flushing anything,
// or creates it, then sets private key, listen port and MTU and brings the
// link up. A kernel "wireguard" link is adopted in kernel mode; a TUN link
// whose UAPI socket answers is adopted in userspace mode together with its
// companion; a TUN link nobody serves is deleted and recreated. To create,
// kernel mode adds a wireguard link; auto does the same and falls back to
// userspace when the kernel does not support it; userspace starts the
// companion (RunCompanion) with cfg.Exe and waits until it answers.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("iface", cfg.Iface)
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open WireGuard %s: netlink: %w", cfg.Iface, err)
	}
	wgc, err := wgctrl.New()
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("open WireGuard %s: wgctrl: %w", cfg.Iface, err)
	}
	d := &Device{cfg: cfg, log: log, nl: nl, wg: wgc}

	created, err := d.ensureLink(ctx)
	if err == nil {
		err = d.setup()
	}
	if err != nil {
		if created {
			d.log.Warn("removing the WireGuard link created by this failed open")
			_ = d.Destroy()
		} else {
			d.Close()
		}
		return nil, err
	}
	log.Info("WireGuard device ready", "mode", d.mode, "adopted", !created,
		"port", cfg.Port, "mtu", cfg.MTU, "public_key", cfg.PrivateKey.PublicKey().String())
	return d, nil
}

// ensureLink adopts or creates the link and sets d.mode (and d.comp).
func (d *Device) ensureLink(ctx context.Context) (created bool, err error) {
	cfg := d.cfg
	link, err := d.nl.LinkByName(cfg.Iface)
	if err != nil && !isLinkNotFound(err) {
		return false, fmt.Errorf("open WireGuard %s: look up link: %w", cfg.Iface, err)
	}
	if link != nil {
		switch typ := link.Type(); typ {
		case "wireguard":
			if cfg.Mode != ModeUserspace {
				d.mode = ModeKernel
				d.log.Info("adopting kernel WireGuard link", "index", link.Attrs().Index)
				return false, nil
			}
			d.log.Warn("kernel WireGuard link exists but userspace mode is configured: recreating")
			if err := d.nl.LinkDel(link); err != nil {
				return false, fmt.Errorf("open WireGuard %s: delete kernel link to switch to userspace: %w", cfg.Iface, err)
			}
		case "tuntap":
			if tt, ok := link.(*netlink.Tuntap); ok && tt.Mode != netlink.TUNTAP_MODE_TUN {
				return false, fmt.Errorf("link %s exists and is a TAP device, not WireGuard: delete it (ip link del %s) or set another interface name", cfg.Iface, cfg.Iface)
			}
			alive := uapiAnswers(cfg.Iface, time.Second)
			if alive && cfg.Mode != ModeKernel {
				d.mode = ModeUserspace
				d.comp = companionFromPIDFile(cfg.RunDir, cfg.Iface)
				pid := 0
				if d.comp != nil {
					pid = d.comp.pid
				}
				d.log.Info("adopting userspace WireGuard link", "index", link.Attrs().Index, "companion_pid", pid)
				return false, nil
			}
			if alive {
				d.log.Warn("userspace WireGuard link exists but kernel mode is configured: recreating")
			} else {
				d.log.Warn("TUN link exists but its UAPI socket does not answer: recreating", "uapi", uapiPath(cfg.Iface))
			}
			if c := companionFromPIDFile(cfg.RunDir, cfg.Iface); c != nil {
				if err := c.stop(2 * time.Second); err != nil {
					d.log.Warn("stopping old wg-companion", "pid", c.pid, "err", err)
				}
			}
			if err := d.nl.LinkDel(link); err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
				return false, fmt.Errorf("open WireGuard %s: delete stale TUN link: %w", cfg.Iface, err)
			}
		default:
			return false, fmt.Errorf("link %s exists with type %s, not WireGuard: delete it (ip link del %s) or set another interface name", cfg.Iface, typ, cfg.Iface)
		}
	}

	if cfg.Mode != ModeUserspace {
		err := d.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: cfg.Iface, MTU: cfg.MTU}})
		if err == nil {
			d.mode = ModeKernel
			d.log.Info("created kernel WireGuard link")
			return true, nil
		}
		if cfg.Mode == ModeKernel || !isNotSupported(err) {
			if isNotSupported(err) {
				return false, fmt.Errorf("create kernel WireGuard link %s: %w: load the wireguard module or set mode to userspace or auto", cfg.Iface, err)
			}
			return false, fmt.Errorf("create kernel WireGuard link %s: %w", cfg.Iface, err)
		}
		d.log.Info("kernel WireGuard not available, using userspace", "err", err)
	}

	if uapiAnswers(cfg.Iface, time.Second) {
		return false, fmt.Errorf("UAPI socket %s is served by another process (a link of the same name in another network namespace?): use a unique interface name", uapiPath(cfg.Iface))
	}
	c, err := startCompanion(ctx, cfg, d.log)
	if err != nil {
		return false, err
	}
	d.mode = ModeUserspace
	d.comp = c
	return true, nil
}

// setup sets MTU, brings the link up and sets key and port where they
// differ, so an adopted device is not disturbed (wireguard-go rebinds its
// socket on every listen_port write).
func (d *Device) setup() error {
	cfg := d.cfg
	link, err := d.nl.LinkByName(cfg.Iface)
	if err != nil {
		return fmt.Errorf("open WireGuard %s: look up link: %w", cfg.Iface, err)
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := d.nl.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("open WireGuard %s: set MTU %d: %w", cfg.Iface, cfg.MTU, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("open WireGuard %s: set link up: %w", cfg.Iface, err)
		}
	}
	dev, err := d.wg.Device(cfg.Iface)
	if err != nil {
		return fmt.Errorf("open WireGuard %s: read device: %w", cfg.Iface, err)
	}
	var wc wgtypes.Config
	if dev.PrivateKey != cfg.PrivateKey {
		wc.PrivateKey = &cfg.PrivateKey
	}
	if dev.ListenPort != cfg.Port {
		wc.ListenPort = &cfg.Port
	}
	if wc.PrivateKey == nil && wc.ListenPort == nil {
		return nil
	}
	if err := d.wg.ConfigureDevice(cfg.Iface, wc); err != nil {
		if isAddrInUse(err) {
			return fmt.Errorf("open WireGuard %s: UDP port %d is in use: free it or set another port", cfg.Iface, cfg.Port)
		}
		return fmt.Errorf("open WireGuard %s: set key and port: %w", cfg.Iface, err)
	}
	return nil
}

// Ensure checks that the link exists and, in userspace mode, that its
// companion answers. When not (the companion was killed, someone deleted
// the link), it makes the device again as Open does and reports true: the
// link's peers and routes went with it, for the caller to set again. Like
// Open, it must run in the device's network namespace (a companion starts
// where the calling thread is).
func (d *Device) Ensure(ctx context.Context) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wg == nil || d.nl == nil {
		return false, fmt.Errorf("WireGuard %s: device is closed", d.cfg.Iface)
	}
	link, err := d.nl.LinkByName(d.cfg.Iface)
	switch {
	case err != nil && !isLinkNotFound(err):
		return false, fmt.Errorf("WireGuard %s: look up link: %w", d.cfg.Iface, err)
	case err == nil && d.mode == ModeKernel && link.Type() == "wireguard":
		return false, nil
	case err == nil && d.mode == ModeUserspace && link.Type() == "tuntap" && uapiAnswers(d.cfg.Iface, time.Second):
		return false, nil
	}
	d.log.Warn("WireGuard device gone or not answering (companion killed? link deleted?): making it again", "mode", d.mode)
	if _, err := d.ensureLink(ctx); err != nil {
		return false, err
	}
	if err := d.setup(); err != nil {
		return false, err
	}
	return true, nil
}

// Mode is "kernel" or "userspace".
func (d *Device) Mode() string { return d.mode }

// Name is the link name.
func (d *Device) Name() string { return d.cfg.Iface }

// PublicKey is the public key of the device's private key.
func (d *Device) PublicKey() wgtypes.Key { return d.cfg.PrivateKey.PublicKey() }

// Port is the UDP listen port.
func (d *Device) Port() int { return d.cfg.Port }

// SetPeers makes the device's peer list equal to peers, touching only
// peers that are new, changed or gone (see PeerConfig), in one
// ConfigureDevice call. It returns how many peers it added, changed or
// removed.
func (d *Device) SetPeers(peers []Peer) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wg == nil {
		return 0, fmt.Errorf("set WireGuard peers on %s: device is closed", d.cfg.Iface)
	}
	dev, err := d.wg.Device(d.cfg.Iface)
	if err != nil {
		return 0, fmt.Errorf("set WireGuard peers on %s: read device: %w", d.cfg.Iface, err)
	}
	wc, changed := PeerConfig(dev.Peers, peers)
	if !changed {
		return 0, nil
	}
	if err := d.wg.ConfigureDevice(d.cfg.Iface, wc); err != nil {
		return 0, fmt.Errorf("set WireGuard peers on %s: %w", d.cfg.Iface, err)
	}
	removed := 0
	for _, p := range wc.Peers {
		if p.Remove {
			removed++
		}
	}
	d.log.Info("WireGuard peers updated", "peers", len(peers), "removed", removed, "added_or_changed", len(wc.Peers)-removed)
	return len(wc.Peers), nil
}

// SetRoutes makes the routes with protocol RouteProtocol on the link equal
// to routes (main table, scope link). Routes of other protocols are left
// alone; a destination already routed by someone else is reported, not
// overwritten. Errors of single routes are joined. It returns how many
// routes it added, replaced or deleted.
func (d *Device) SetRoutes(routes []Route) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nl == nil {
		return 0, fmt.Errorf("set routes on %s: device is closed", d.cfg.Iface)
	}
	link, err := d.nl.LinkByName(d.cfg.Iface)
	if err != nil {
		return 0, fmt.Errorf("set routes on %s: look up link: %w", d.cfg.Iface, err)
	}
	index := link.Attrs().Index
	have, err := d.ownRoutes(index)
	if err != nil {
		return 0, fmt.Errorf("set routes on %s: %w", d.cfg.Iface, err)
	}
	current := make([]Route, 0, len(have))
	for _, r := range have {
		current = append(current, r.route)
	}
	add, del := RouteDiff(current, routes)

	var errs []error
	for _, r := range del {
		for _, h := range have {
			if h.route.Dst != r.Dst {
				continue
			}
			if err := d.nl.RouteDel(&h.nl); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s dev %s: %w", r.Dst, d.cfg.Iface, err))
			}
		}
	}
	for _, r := range add {
		nr := netlinkRoute(index, r)
		owned := false
		for _, h := range have {
			owned = owned || h.route.Dst == r.Dst
		}
		if owned {
			err = d.nl.RouteReplace(nr)
		} else {
			err = d.nl.RouteAdd(nr)
		}
		switch {
		case errors.Is(err, unix.EEXIST):
			errs = append(errs, fmt.Errorf("add route %s dev %s: a route to %s not owned by netloom exists: remove it", r.Dst, d.cfg.Iface, r.Dst))
		case err != nil:
			errs = append(errs, fmt.Errorf("add route %s dev %s src %s: %w", r.Dst, d.cfg.Iface, r.Src, err))
		}
	}
	if len(add)+len(del) > 0 {
		d.log.Info("WireGuard routes updated", "routes", len(routes), "added", len(add), "deleted", len(del), "errors", len(errs))
	}
	return len(add) + len(del), errors.Join(errs...)
}

type ownRoute struct {
	route Route
	nl    netlink.Route
}

// ownRoutes lists the routes with our protocol via the link in the main table.
func (d *Device) ownRoutes(index int) ([]ownRoute, error) {
	filter := &netlink.Route{LinkIndex: index, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	rs, err := d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter,
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]ownRoute, 0, len(rs))
	for _, r := range rs {
		var dst netip.Prefix
		if r.Dst == nil {
			if r.Family == unix.AF_INET6 {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			} else {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			}
		} else if ps := prefixes([]net.IPNet{*r.Dst}); len(ps) == 1 {
			dst = ps[0]
		} else {
			continue
		}
		src, _ := netip.AddrFromSlice(r.Src)
		out = append(out, ownRoute{route: Route{Dst: dst, Src: src.Unmap()}, nl: r})
	}
	return out, nil
}

func netlinkRoute(index int, r Route) *netlink.Route {
	dst := ipNet(r.Dst.Masked())
	nr := &netlink.Route{
		LinkIndex: index,
		Dst:       &dst,
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.Unmap().AsSlice()
	}
	return nr
}

// Stats reports every peer the device has, by public key.
func (d *Device) Stats() (map[wgtypes.Key]PeerStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wg == nil {
		return nil, fmt.Errorf("read WireGuard stats of %s: device is closed", d.cfg.Iface)
	}
	dev, err := d.wg.Device(d.cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("read WireGuard stats of %s: %w", d.cfg.Iface, err)
	}
	out := make(map[wgtypes.Key]PeerStats, len(dev.Peers))
	for _, p := range dev.Peers {
		hs := p.LastHandshakeTime
		if !hs.IsZero() && hs.Unix() == 0 && hs.Nanosecond() == 0 {
			hs = time.Time{}
		}
		out[p.PublicKey] = PeerStats{
			Endpoint:      addrPort(p.Endpoint),
			LastHandshake: hs,
			RxBytes:       p.ReceiveBytes,
			TxBytes:       p.TransmitBytes,
		}
	}
	return out, nil
}

// Close releases the netlink and wgctrl handles and leaves link, peers,
// routes and companion in place, for an agent restart to adopt.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closeLocked()
}

func (d *Device) closeLocked() error {
	var err error
	if d.wg != nil {
		err = d.wg.Close()
		d.wg = nil
	}
	if d.nl != nil {
		d.nl.Close()
		d.nl = nil
	}
	if err != nil {
		return fmt.Errorf("close WireGuard %s: %w", d.cfg.Iface, err)
	}
	return nil
}

// Destroy removes our routes and the link, stops the companion (only a
// process whose command line is a wg-companion for this link), removes its
// pid file and closes the handles. Used when the node leaves. It needs an
// open Device (the handles are bound to its network namespace).
func (d *Device) Destroy() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg := d.cfg
	if d.nl == nil {
		return fmt.Errorf("destroy WireGuard %s: device is closed: open it again first", cfg.Iface)
	}
	var errs []error
	link, err := d.nl.LinkByName(cfg.Iface)
	switch {
	case err == nil:
		if have, err := d.ownRoutes(link.Attrs().Index); err != nil {
			errs = append(errs, fmt.Errorf("destroy WireGuard %s: %w", cfg.Iface, err))
		} else {
			for _, h := range have {
				if err := d.nl.RouteDel(&h.nl); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete route %s dev %s: %w", h.route.Dst, cfg.Iface, err))
				}
			}
		}
		if err := d.nl.LinkDel(link); err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", cfg.Iface, err))
		}
	case !isLinkNotFound(err):
		errs = append(errs, fmt.Errorf("destroy WireGuard %s: look up link: %w", cfg.Iface, err))
	}
	if d.mode == ModeUserspace {
		c := d.comp
		if c == nil || !isCompanion(c.pid, cfg.Iface) {
			c = companionFromPIDFile(cfg.RunDir, cfg.Iface)
		}
		if c != nil {
			if err := c.stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
			removePIDFile(pidFile(cfg.RunDir, cfg.Iface), c.pid)
		}
		if _, err := os.Stat(uapiPath(cfg.Iface)); err == nil && !uapiAnswers(cfg.Iface, time.Second) {
			_ = os.Remove(uapiPath(cfg.Iface))
		}
	}
	if err := d.closeLocked(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		d.log.Info("WireGuard device destroyed", "mode", d.mode)
	}
	return errors.Join(errs...)
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT)
}

// isAddrInUse matches EADDRINUSE from the kernel (genetlink) and from a
// userspace device, which wgctrl reports only as text ("errno=-98").
func isAddrInUse(err error) bool {
	msg := err.Error()
	n := int(unix.EADDRINUSE)
	return errors.Is(err, unix.EADDRINUSE) ||
		strings.Contains(msg, fmt.Sprintf("errno=-%d", n)) || strings.Contains(msg, fmt.Sprintf("errno=%d", n))
}
