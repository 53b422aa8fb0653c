package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netloom/netloom/node/demo"
	"github.com/vishvananda/netlink"
)

// failoverRun is one SIGKILL of the VIP's owner.
type failoverRun struct {
	from, to string
	// arp: kill -> the client's neighbour entry for the VIP holds another
	// node's MAC (first seen by the prober).
	arp time.Duration
	// connect: kill -> first successful TCP connect through the new owner.
	connect time.Duration
	// Attempts by the prober: through the old owner (its data plane stays
	// after the kill) answered and failed, and failed through the new
	// owner before the first success.
	oldOK, oldFail, newFail int
	// oldErr is the first failure through the old owner, lastOldOK the time
	// of the last success through it (from the kill).
	oldErr    string
	lastOldOK time.Duration
	// stuck counts, by endpoint pod, the connections through the old owner
	// that never got an answer (conntrack SYN_SENT there after the run).
	stuck map[string]int
	// handshakes is, just before the kill, every node's `wg show
	// latest-handshakes` (peer key -> unix time) with the peers named.
	handshakes string
}

type failoverResult struct {
	name  string
	flags []string
	runs  []failoverRun
	fails []string // runs that did not fail over within the deadline
	wall  time.Duration
}

func failoverBench(ctx context.Context, o options, dir string, log *slog.Logger, name string, flags []string) (failoverResult, error) {
	res := failoverResult{name: name, flags: flags}
	start := time.Now()
	b, err := newBench(ctx, o, dir, log, "failover-"+name, flags)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	n1 := b.c.Nodes[0]
	if err := b.apply(ctx, n1, "apply", poolManifest+podsManifest(b.c.Pods(), nil)+service("web", "LoadBalancer", "app: web", 80, serverPort, false)); err != nil {
		return res, err
	}
	vip, owner, err := b.vip(ctx, "web", b.c.Nodes, "", 60*time.Second)
	if err != nil {
		return res, err
	}
	addr := netip.AddrPortFrom(vip, 80)
	fmt.Fprintf(logw(o), "%s timers: service web at %s, announced by %s\n", name, vip, owner)
	for i := 0; i < o.runs; i++ {
		if err := b.settle(ctx, addr, owner); err != nil {
			return res, fmt.Errorf("run %d: %w", i+1, err)
		}
		r, err := b.killOwner(ctx, addr, owner)
		if err != nil {
			res.fails = append(res.fails, fmt.Sprintf("run %d: %v", i+1, err))
		} else {
			res.runs = append(res.runs, r)
			fmt.Fprintf(logw(o), "%s run %d: %s -> %s: ARP %s, connect %s (through the old owner meanwhile: %d ok, last at %s, %d failed, first: %s; through the new one before the first success: %d failed)\n",
				name, i+1, r.from, r.to, r.arp.Round(time.Millisecond), r.connect.Round(time.Millisecond), r.oldOK, r.lastOldOK.Round(time.Millisecond), r.oldFail, r.oldErr, r.newFail)
			if len(r.stuck) > 0 {
				fmt.Fprintf(logw(o), "    unanswered connections through %s, by endpoint: %v\n", r.from, r.stuck)
			}
			fmt.Fprintf(logw(o), "    WireGuard handshakes before the kill: %s\n", r.handshakes)
		}
		// The killed agent comes back; the cluster settles on an owner.
		if err := b.c.StartAgent(b.node(owner)); err != nil {
			return res, err
		}
		if err := b.c.WaitReady(ctx, 90*time.Second); err != nil {
			return res, err
		}
		if _, owner, err = b.vip(ctx, "web", b.c.Nodes, "", 60*time.Second); err != nil {
			return res, err
		}
	}
	res.wall = time.Since(start)
	return res, nil
}

// logw is where progress goes (stderr, always: a run is long).
func logw(o options) io.Writer { return os.Stderr }

// settle waits until the client connects to addr and its neighbour entry
// holds owner's MAC, then lets the owner's gratuitous ARP burst (4 s) end.
func (b *bench) settle(ctx context.Context, addr netip.AddrPort, owner string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var mac string
		err := demo.Do(b.clientNS, func() error {
			c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
			if err != nil {
				return err
			}
			abort(c)
			mac, err = neighMAC(addr.Addr())
			return err
		})
		if err == nil && mac == b.macs[owner] {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client does not settle on %s (%s) for %s: neighbour %q, %v", owner, b.macs[owner], addr, mac, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return sleep(ctx, 5*time.Second)
}

// neighMAC reads the neighbour entry for addr on eth0 of the current
// thread's namespace.
func neighMAC(addr netip.Addr) (string, error) {
	l, err := netlink.LinkByName("eth0")
	if err != nil {
		return "", err
	}
	ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr && n.HardwareAddr != nil &&
			n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
			return n.HardwareAddr.String(), nil
		}
	}
	return "", nil
}

// killOwner SIGKILLs the owner's agent and follows the client's view.
func (b *bench) killOwner(ctx context.Context, addr netip.AddrPort, owner string) (failoverRun, error) {
	r := failoverRun{from: owner}
	old := b.macs[owner]
	byMAC := map[string]string{}
	for n, m := range b.macs {
		byMAC[m] = n
	}
	var t0 time.Time
	ready, goCh := make(chan struct{}), make(chan struct{})
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() {
		errc <- demo.Do(b.clientNS, func() error {
			close(ready)
			<-goCh
			d := net.Dialer{Timeout: 100 * time.Millisecond}
			for !stop.Load() {
				mac, err := neighMAC(addr.Addr())
				if err != nil {
					return err
				}
				moved := mac != "" && mac != old
				if moved && r.arp == 0 {
					r.arp = time.Since(t0)
				}
				c, err := d.Dial("tcp4", addr.String())
				switch {
				case err == nil && moved:
					r.connect = time.Since(t0)
					r.to = byMAC[mac]
					abort(c)
					return nil
				case err == nil:
					r.oldOK++
					r.lastOldOK = time.Since(t0)
					abort(c)
				case moved:
					r.newFail++
				default:
					if r.oldFail == 0 {
						r.oldErr = fmt.Sprintf("%s at %s", err, time.Since(t0).Round(time.Millisecond))
					}
					r.oldFail++
				}
				time.Sleep(2 * time.Millisecond)
			}
			return errors.New("stopped")
		})
	}()
	<-ready
	r.handshakes = b.handshakes(ctx)
	t0 = time.Now()
	close(goCh)
	if err := b.c.StopAgent(b.node(owner), syscall.SIGKILL); err != nil {
		stop.Store(true)
		<-errc
		return r, err
	}
	select {
	case err := <-errc:
		if r.to == "" && err == nil {
			err = errors.New("connected through an unknown MAC")
		}
		if r.oldFail > 0 {
			r.stuck = b.unanswered(ctx, owner, addr.Addr())
		}
		return r, err
	case <-time.After(60 * time.Second):
		stop.Store(true)
		<-errc
		return r, fmt.Errorf("no connection through a new owner within 60s of killing %s (client's neighbour entry moved after %s)", owner, r.arp)
	case <-ctx.Done():
		stop.Store(true)
		<-errc
		return r, ctx.Err()
	}
}

// handshakes summarises every node's latest WireGuard handshakes: "node1:
// node2 3s ago, node3 never; ...".
func (b *bench) handshakes(ctx context.Context) string {
	keys := map[string]string{}
	for _, n := range b.c.Nodes {
		if out, err := demo.ExecContext(ctx, n.NS, "wg", "show", n.WGIface, "public-key"); err == nil {
			keys[strings.TrimSpace(out)] = n.Name
		}
	}
	var parts []string
	now := time.Now()
	for _, n := range b.c.Nodes {
		out, err := demo.ExecContext(ctx, n.NS, "wg", "show", n.WGIface, "latest-handshakes")
		if err != nil {
			parts = append(parts, n.Name+": "+err.Error())
			continue
		}
		var peers []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			ago := "never"
			if sec, _ := strconv.ParseInt(f[1], 10, 64); sec > 0 {
				ago = now.Sub(time.Unix(sec, 0)).Round(time.Second).String() + " ago"
			}
			peers = append(peers, keys[f[0]]+" "+ago)
		}
		parts = append(parts, n.Name+": "+strings.Join(peers, ", "))
	}
	return strings.Join(parts, "; ")
}

// unanswered counts node's conntrack entries to vip still in SYN_SENT, by
// the pod they were sent to.
func (b *bench) unanswered(ctx context.Context, node string, vip netip.Addr) map[string]int {
	out, _ := demo.ExecContext(ctx, b.node(node).NS, "conntrack", "-L", "-p", "tcp", "--state", "SYN_SENT", "-d", vip.String())
	byIP := map[string]string{}
	for _, p := range b.c.Pods() {
		byIP[p.IP.String()] = p.Name
	}
	m := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		// ... src=CLIENT dst=VIP sport dport [UNREPLIED] src=POD dst=...
		f := strings.Fields(l)
		n := 0
		for _, x := range f {
			if strings.HasPrefix(x, "src=") {
				n++
				if n == 2 {
					ip := strings.TrimPrefix(x, "src=")
					name := byIP[ip]
					if name == "" {
						name = ip
					}
					m[name]++
				}
			}
		}
	}
	return m
}

func reportFailover(w io.Writer, o options, results []failoverResult) {
	fmt.Fprintf(w, "## Failover: SIGKILL of the VIP owner's agent -> first TCP connect through the new owner\n\n")
	fmt.Fprintf(w, "3-node demo cluster, 2 pods per node; client on the same bridge; %d runs per row; connect timeout 100 ms, next attempt 2 ms after the last.\n\n", o.runs)
	fmt.Fprintf(w, "| timers | runs | first connect via new owner: median | p90 | worst | best | client ARP entry moved: median | worst | failed connects after the move |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range results {
		var conn, arp []time.Duration
		newFail := 0
		for _, x := range r.runs {
			conn = append(conn, x.connect)
			arp = append(arp, x.arp)
			newFail += x.newFail
		}
		timers := "agent defaults (200ms, 150ms, 2, 100ms)"
		if len(r.flags) > 0 {
			timers = strings.Join(r.flags, " ")
		}
		ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %d |\n", timers, len(r.runs),
			ms(median(conn)), ms(percentile(conn, 0.9)), ms(percentile(conn, 1)), ms(percentile(conn, 0)),
			ms(median(arp)), ms(percentile(arp, 1)), newFail)
		for _, f := range r.fails {
			fmt.Fprintf(w, "\n%s timers, failed run: %s\n", r.name, f)
		}
	}
	fmt.Fprintln(w)
	for _, r := range results {
		fmt.Fprintf(w, "%s timers, every run (kill -> ARP moved / first connect; attempts through the old owner ok/failed; failed through the new one):\n\n", r.name)
		for i, x := range r.runs {
			fmt.Fprintf(w, "    run %2d  %s -> %s  %5d ms / %5d ms   old %3d/%d   new-failed %d\n", i+1, x.from, x.to,
				x.arp.Milliseconds(), x.connect.Milliseconds(), x.oldOK, x.oldFail, x.newFail)
		}
		fmt.Fprintf(w, "\n(wall time %s)\n\n", r.wall.Round(time.Second))
	}
}
