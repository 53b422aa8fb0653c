package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/netloom/netloom/node/demo"
	"github.com/vishvananda/netlink"
)

// Failover modes.
const (
	// modeNodeLoss: the owner's link to the LAN goes down inside its
	// namespace, then its agent is SIGKILLed: the node is gone, as after a
	// power or cable loss.
	modeNodeLoss = "node-loss"
	// modeAgentKill: only the owner's agent is SIGKILLed; its kernel keeps
	// forwarding with the rules it had, so clients are still served
	// through it. Not a node failure; kept for comparison.
	modeAgentKill = "agent-kill"
)

// The client's pace and patience, as a user's would be: a new connection
// every probeEvery, each given dialTimeout (the kernel retransmits an
// unanswered SYN after 1 s, then 3 s).
const (
	probeEvery  = 50 * time.Millisecond
	dialTimeout = 3500 * time.Millisecond
	// preTraffic is how long the client has been connecting before t0.
	preTraffic = time.Second
	// tail is how long the client keeps connecting after the first success
	// through the new owner (to catch SYNs the new owner sends to the dead
	// node's pods).
	tail = time.Second
)

// never marks a step that was not seen.
const never time.Duration = -1

// attempt is one connection of the client.
type attempt struct {
	start, end time.Time
	ok         bool
	mac        string // the client's neighbour entry for the VIP at start
}

// failoverRun is one failure of a VIP's owner. Times are from t0 (the link
// down, or the SIGKILL in agent-kill mode); never when not seen.
type failoverRun struct {
	mode, policy string
	from, to     string
	// suspect: first survivor's memberlist suspects the owner (its probe
	// got no answer); dead: first survivor declares it failed; deadNew: the
	// new owner does.
	suspect, dead, deadNew time.Duration
	// moved: the new owner's lb room recomputed the owner ("VIP moved");
	// garpSent: its announcer sent the first gratuitous ARP.
	moved, garpSent time.Duration
	// garpSeen: the client's capture has the first ARP for the VIP from
	// another node's MAC.
	garpSeen time.Duration
	// epsGone: the new owner's nftables lost the dead node's pods (nft
	// monitor: first element deletion naming one).
	epsGone time.Duration
	// first: end of the first successful connection started at or after
	// t0 (what the user sees); firstStart: when it started.
	first, firstStart time.Duration
	// viaNew: the first successful connection through the new owner (in
	// node-loss mode the same as first).
	viaNew time.Duration
	// Attempts started at or after t0, and of those started after the
	// client's neighbour entry moved: how many took a SYN retransmit (1 s
	// or more) or failed (the new owner sent them to a dead endpoint).
	attempts, afterMove, slowAfterMove int
}

type failoverResult struct {
	name  string
	flags []string
	runs  []failoverRun
	fails []string // runs that did not fail over within the deadline
	wall  time.Duration
}

// services of the failover cluster, by externalTrafficPolicy.
var policyService = map[string]string{"Cluster": "web", "Local": "webl"}

func failoverBench(ctx context.Context, o options, dir string, log *slog.Logger, name string, flags []string) (res failoverResult, err error) {
	res = failoverResult{name: name, flags: flags}
	start := time.Now()
	// memberlist's suspicions are INFO lines, which the agent logs at
	// debug level; JSON carries the times to the nanosecond.
	agentArgs := append(slices.Clone(flags), "--log-level", "debug")
	b, err := newBenchFmt(ctx, o, dir, log, "failover-"+name, agentArgs, "json")
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	n1 := b.c.Nodes[0]
	m := poolManifest + podsManifest(b.c.Pods(), nil) +
		service(policyService["Cluster"], "LoadBalancer", "app: web", 80, serverPort, false) +
		service(policyService["Local"], "LoadBalancer", "app: web", 80, serverPort, true)
	if err := b.apply(ctx, n1, "apply", m); err != nil {
		return res, err
	}
	for _, p := range o.policies {
		vip, owner, err := b.vip(ctx, policyService[p], b.c.Nodes, "", 60*time.Second)
		if err != nil {
			return res, err
		}
		fmt.Fprintf(logw(o), "%s timers: externalTrafficPolicy %s: service %s at %s, announced by %s\n", name, p, policyService[p], vip, owner)
	}
	// Rounds alternate mode and policy, so that every row sees the same
	// moments of a shared machine.
	for i := 0; i < o.runs; i++ {
		for _, mode := range o.modes {
			for _, policy := range o.policies {
				svc := policyService[policy]
				vip, owner, err := b.vip(ctx, svc, b.c.Nodes, "", 60*time.Second)
				if err != nil {
					return res, err
				}
				addr := netip.AddrPortFrom(vip, 80)
				if err := b.settle(ctx, addr, owner); err != nil {
					return res, fmt.Errorf("run %d: %w", i+1, err)
				}
				r, err := b.failOwner(ctx, mode, addr, owner)
				r.policy = policy
				if err != nil {
					res.fails = append(res.fails, fmt.Sprintf("%s %s run %d: %v", mode, policy, i+1, err))
				} else {
					res.runs = append(res.runs, r)
					fmt.Fprintf(logw(o), "%s %s %s run %d: %s\n", name, mode, policy, i+1, r.line())
				}
				if err := b.restore(ctx, mode, owner); err != nil {
					return res, err
				}
			}
		}
	}
	res.wall = time.Since(start)
	return res, nil
}

// restore brings the failed owner back: its link (node-loss) and its
// agent, and waits until the cluster is ready and agrees on the owners.
func (b *bench) restore(ctx context.Context, mode, owner string) error {
	n := b.node(owner)
	if mode == modeNodeLoss {
		for _, s := range [][]string{
			{"-n", n.NS, "link", "set", "eth0", "up"},
			// the default route went with the link
			{"-n", n.NS, "route", "replace", "default", "via", b.c.SwitchAddr.String(), "dev", "eth0"},
		} {
			if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
				return fmt.Errorf("restore %s: ip %s: %v: %s", owner, strings.Join(s, " "), err, out)
			}
		}
	}
	if err := b.c.StartAgent(n); err != nil {
		return err
	}
	if err := b.c.WaitReady(ctx, 90*time.Second); err != nil {
		return err
	}
	for _, svc := range policyService {
		if _, _, err := b.vip(ctx, svc, b.c.Nodes, "", 60*time.Second); err != nil {
			return err
		}
	}
	return nil
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

// prober is the client: a new connection to addr every probeEvery, each
// from its own thread in the client's namespace.
type prober struct {
	mu       sync.Mutex
	attempts []attempt
	ok       chan struct{} // receives after each success (cap 1)
	wg       sync.WaitGroup
}

func (b *bench) startProber(ctx context.Context, addr netip.AddrPort) (*prober, func()) {
	p := &prober{ok: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(probeEvery)
		defer t.Stop()
		for {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_ = demo.Do(b.clientNS, func() error {
					var a attempt
					a.mac, _ = neighMAC(addr.Addr())
					a.start = time.Now()
					d := net.Dialer{Timeout: dialTimeout}
					c, err := d.DialContext(ctx, "tcp4", addr.String())
					a.end = time.Now()
					if err == nil {
						a.ok = true
						abort(c)
					} else if ctx.Err() != nil {
						return nil // cut short: not an answer either way
					}
					p.mu.Lock()
					p.attempts = append(p.attempts, a)
					p.mu.Unlock()
					if a.ok {
						select {
						case p.ok <- struct{}{}:
						default:
						}
					}
					return nil
				})
			}()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	// stopLaunching ends new attempts; wait lets the pending ones finish.
	stop := func() {
		cancel()
		<-done
		p.wg.Wait()
	}
	return p, stop
}

func (p *prober) snapshot() []attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.attempts)
}

// arpSeen is one ARP packet the client's capture saw.
type arpSeen struct {
	at       time.Time
	op       arp.Operation
	senderHW string
	senderIP netip.Addr
	targetIP netip.Addr
}

// captureARP records the ARP packets on the client's eth0 until stop.
func (b *bench) captureARP() (func() []arpSeen, error) {
	var cl *arp.Client
	if err := demo.Do(b.clientNS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		cl, err = arp.Dial(ifi)
		return err
	}); err != nil {
		return nil, fmt.Errorf("client ARP capture: %w", err)
	}
	var mu sync.Mutex
	var seen []arpSeen
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pkt, _, err := cl.Read()
			now := time.Now()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
					return
				}
				var op *net.OpError
				if errors.As(err, &op) {
					return
				}
				continue // a malformed packet
			}
			mu.Lock()
			seen = append(seen, arpSeen{at: now, op: pkt.Operation, senderHW: pkt.SenderHardwareAddr.String(), senderIP: pkt.SenderIP, targetIP: pkt.TargetIP})
			mu.Unlock()
		}
	}()
	return func() []arpSeen {
		cl.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}, nil
}

// nftLine is one line of `nft monitor` with the time it was read.
type nftLine struct {
	at   time.Time
	text string
}

// monitorNFT runs `nft monitor` in node n's namespace until stop.
func (b *bench) monitorNFT(n *demo.Node) (func() []nftLine, error) {
	cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "monitor")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nft monitor in %s: %w", n.NS, err)
	}
	var mu sync.Mutex
	var lines []nftLine
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			now := time.Now()
			mu.Lock()
			lines = append(lines, nftLine{now, sc.Text()})
			mu.Unlock()
		}
	}()
	return func() []nftLine {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		_ = cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		return lines
	}, nil
}

// failOwner fails the owner of addr's VIP (mode) and follows the client's
// view and the survivors' logs.
func (b *bench) failOwner(ctx context.Context, mode string, addr netip.AddrPort, owner string) (failoverRun, error) {
	r := failoverRun{mode: mode, from: owner}
	on := b.node(owner)
	old := b.macs[owner]
	byMAC := map[string]string{}
	for n, m := range b.macs {
		byMAC[m] = n
	}
	survivors := b.others(owner)
	offsets := map[string]int64{}
	for _, n := range survivors {
		if fi, err := os.Stat(n.LogPath); err == nil {
			offsets[n.Name] = fi.Size()
		}
	}
	var stopMon []func() []nftLine
	for _, n := range survivors {
		stop, err := b.monitorNFT(n)
		if err != nil {
			for _, s := range stopMon {
				s()
			}
			return r, err
		}
		stopMon = append(stopMon, stop)
	}
	nftOf := func() map[string][]nftLine {
		m := map[string][]nftLine{}
		for i, s := range stopMon {
			m[survivors[i].Name] = s()
		}
		stopMon = nil
		return m
	}
	defer func() {
		if stopMon != nil {
			nftOf()
		}
	}()
	stopARP, err := b.captureARP()
	if err != nil {
		return r, err
	}
	arpDone := false
	defer func() {
		if !arpDone {
			stopARP()
		}
	}()
	p, stopProbe := b.startProber(ctx, addr)
	probing := true
	defer func() {
		if probing {
			stopProbe()
		}
	}()
	if err := sleep(ctx, preTraffic); err != nil {
		return r, err
	}

	// t0 is when the link is down (node-loss; then no attempt started
	// later reaches the old owner) or the kill is sent (agent-kill).
	t0 := time.Now()
	if mode == modeNodeLoss {
		if err := demo.Do(on.NS, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetDown(l); err != nil {
				return err
			}
			t0 = time.Now()
			return nil
		}); err != nil {
			return r, fmt.Errorf("link down on %s: %w", owner, err)
		}
	}
	if err := b.c.StopAgent(on, syscall.SIGKILL); err != nil {
		return r, err
	}

	// Wait for the first success through another node, then the tail.
	viaNew := func(a attempt) bool {
		if !a.ok || a.start.Before(t0) {
			return false
		}
		if mode == modeNodeLoss {
			return true // the old owner is off the LAN
		}
		return a.mac != "" && a.mac != old
	}
	deadline := time.After(30 * time.Second)
	var firstNew time.Time
wait:
	for {
		select {
		case <-p.ok:
			for _, a := range p.snapshot() {
				if viaNew(a) && (firstNew.IsZero() || a.end.Before(firstNew)) {
					firstNew = a.end
				}
			}
			if !firstNew.IsZero() {
				break wait
			}
		case <-deadline:
			break wait
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
	if !firstNew.IsZero() {
		if err := sleep(ctx, tail); err != nil {
			return r, err
		}
	}
	stopProbe()
	probing = false
	attempts := p.snapshot()
	seen := stopARP()
	arpDone = true
	mon := nftOf()

	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return never
		}
		return t.Sub(t0)
	}
	// The client's view.
	var first, firstStart, moved time.Time
	for _, a := range attempts {
		if a.start.Before(t0) {
			continue
		}
		r.attempts++
		if a.ok && (first.IsZero() || a.end.Before(first)) {
			first, firstStart = a.end, a.start
		}
	}
	for _, s := range seen {
		if !s.at.Before(t0) && s.senderIP == addr.Addr() && s.senderHW != old && byMAC[s.senderHW] != "" {
			moved = s.at
			r.to = byMAC[s.senderHW]
			break
		}
	}
	if firstNew.IsZero() {
		return r, fmt.Errorf("no connection through a new owner within 30s of failing %s (first ARP from another node at %s)", owner, since(moved))
	}
	r.first, r.firstStart, r.viaNew, r.garpSeen = since(first), since(firstStart), since(firstNew), since(moved)
	for _, a := range attempts {
		if a.start.Before(t0) || a.mac == "" || a.mac == old {
			continue
		}
		r.afterMove++
		if !a.ok || a.end.Sub(a.start) >= 900*time.Millisecond {
			r.slowAfterMove++
		}
	}
	if r.to == "" {
		// No gratuitous ARP seen: take the MAC of the first connection
		// through the new owner.
		for _, a := range attempts {
			if viaNew(a) && a.mac != old {
				r.to = byMAC[a.mac]
				break
			}
		}
	}

	// The survivors' view, from their logs.
	r.suspect, r.dead, r.deadNew, r.moved, r.garpSent, r.epsGone = never, never, never, never, never, never
	earliest := func(d *time.Duration, t time.Time) {
		if x := t.Sub(t0); *d == never || x < *d {
			*d = x
		}
	}
	for _, n := range survivors {
		lines, err := logLines(n.LogPath, offsets[n.Name])
		if err != nil {
			return r, err
		}
		isNew := n.Name == r.to
		for _, l := range lines {
			if l.at.Before(t0) {
				continue
			}
			switch {
			case strings.HasPrefix(l.msg, "gossip: Suspect "+owner+" has failed"):
				earliest(&r.suspect, l.at)
			case l.msg == "member failed" && l.attrs["member"] == owner:
				earliest(&r.dead, l.at)
				if isNew {
					earliest(&r.deadNew, l.at)
				}
			case isNew && l.msg == "VIP moved" && l.attrs["vip"] == addr.Addr().String():
				earliest(&r.moved, l.at)
			case isNew && l.msg == "gratuitous arp sent" && l.attrs["vip"] == addr.Addr().String():
				earliest(&r.garpSent, l.at)
			}
		}
	}
	var deadPods []string
	for _, pod := range on.Pods {
		deadPods = append(deadPods, pod.IP.String()+" ")
	}
	for _, l := range mon[r.to] {
		if l.at.Before(t0) || !strings.HasPrefix(l.text, "delete element") {
			continue
		}
		for _, ip := range deadPods {
			if strings.Contains(l.text+" ", ip) {
				earliest(&r.epsGone, l.at)
			}
		}
	}
	return r, nil
}

// logLine is one JSON line of an agent's log.
type logLine struct {
	at    time.Time
	msg   string
	attrs map[string]string
}

// logLines parses the JSON log at path from offset (lines that are not
// JSON are skipped).
func logLines(path string, offset int64) ([]logLine, error) {
	data, err := readFrom(path, offset)
	if err != nil {
		return nil, err
	}
	var out []logLine
	for _, raw := range strings.Split(string(data), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(raw), &m) != nil {
			continue
		}
		ts, _ := m["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		l := logLine{at: at, attrs: map[string]string{}}
		l.msg, _ = m["msg"].(string)
		for k, v := range m {
			if s, ok := v.(string); ok {
				l.attrs[k] = s
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// ms formats a step's time.
func ms(d time.Duration) string {
	if d == never {
		return "-"
	}
	return fmt.Sprintf("%d", d.Milliseconds())
}

// line is a run in one line, for the progress log.
func (r failoverRun) line() string {
	return fmt.Sprintf("%s -> %s: suspect %s, dead %s (new owner %s), VIP moved %s, GARP sent %s, seen by the client %s, endpoints gone %s; "+
		"first connect %s (started %s), via the new owner %s; attempts %d, after the move %d of which %d slow or failed",
		r.from, r.to, ms(r.suspect), ms(r.dead), ms(r.deadNew), ms(r.moved), ms(r.garpSent), ms(r.garpSeen), ms(r.epsGone),
		ms(r.first), ms(r.firstStart), ms(r.viaNew), r.attempts, r.afterMove, r.slowAfterMove)
}

// part is one step of the breakdown: the time from the previous step.
type part struct {
	name string
	of   func(r failoverRun) time.Duration
}

// diff is b - a, never when either was not seen.
func diff(a, b time.Duration) time.Duration {
	if a == never || b == never {
		return never
	}
	return b - a
}

// parts add up to the first connection through the new owner.
var parts = []part{
	{"t0 -> first suspicion (probe schedule + failed probe)", func(r failoverRun) time.Duration { return r.suspect }},
	{"suspicion -> declared dead (first survivor)", func(r failoverRun) time.Duration { return diff(r.suspect, r.dead) }},
	{"dead -> VIP moved on the new owner (gossip, snapshot, owner recomputed)", func(r failoverRun) time.Duration { return diff(r.dead, r.moved) }},
	{"VIP moved -> client's ARP entry moved (gratuitous ARP)", func(r failoverRun) time.Duration { return diff(r.moved, r.garpSeen) }},
	{"ARP moved -> first connect via the new owner", func(r failoverRun) time.Duration { return diff(r.garpSeen, r.viaNew) }},
	{"(aside: dead on the new owner -> dead node's endpoints removed there)", func(r failoverRun) time.Duration { return diff(r.deadNew, r.epsGone) }},
}

// stats of the seen values: median, p90, worst.
func stats(v []time.Duration) string {
	var seen []time.Duration
	for _, d := range v {
		if d != never {
			seen = append(seen, d)
		}
	}
	if len(seen) == 0 {
		return "-"
	}
	s := fmt.Sprintf("%d / %d / %d", median(seen).Milliseconds(), percentile(seen, 0.9).Milliseconds(), percentile(seen, 1).Milliseconds())
	if len(seen) < len(v) {
		s += fmt.Sprintf(" (%d of %d runs)", len(seen), len(v))
	}
	return s
}

func reportFailover(w io.Writer, o options, results []failoverResult) {
	fmt.Fprintf(w, "## Failover of a LoadBalancer VIP's owner, as the client sees it\n\n")
	fmt.Fprintf(w, "%d-node demo cluster, 2 pods per node; client on the same bridge opening a new TCP connection to VIP:80 every %s (each with %s, the kernel's SYN retransmits); %d runs per row, modes and policies alternating.\n", o.nodes, probeEvery, dialTimeout, o.runs)
	fmt.Fprintf(w, "node-loss: the owner's eth0 goes down in its namespace, then its agent is SIGKILLed. agent-kill: only the agent is SIGKILLed (its kernel keeps forwarding: not a node failure).\n")
	fmt.Fprintf(w, "Times in ms from the link down (agent-kill: the kill) as median / p90 / worst.\n\n")
	fmt.Fprintf(w, "| timers | mode | policy | runs | first successful connect | first connect via the new owner | client's ARP entry moved | declared dead | connects after the move that needed a SYN retransmit |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	type row struct {
		r            failoverResult
		mode, policy string
		runs         []failoverRun
	}
	var rows []row
	for _, r := range results {
		for _, mode := range o.modes {
			for _, policy := range o.policies {
				x := row{r: r, mode: mode, policy: policy}
				for _, run := range r.runs {
					if run.mode == mode && run.policy == policy {
						x.runs = append(x.runs, run)
					}
				}
				rows = append(rows, x)
			}
		}
	}
	col := func(runs []failoverRun, f func(failoverRun) time.Duration) []time.Duration {
		out := make([]time.Duration, len(runs))
		for i, x := range runs {
			out[i] = f(x)
		}
		return out
	}
	timers := func(r failoverResult) string {
		if len(r.flags) == 0 {
			return r.name + " (agent defaults)"
		}
		return r.name + ": `" + strings.Join(r.flags, " ") + "`"
	}
	for _, x := range rows {
		slow, after := 0, 0
		for _, run := range x.runs {
			slow += run.slowAfterMove
			after += run.afterMove
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %s | %s | %d of %d |\n", timers(x.r), x.mode, x.policy, len(x.runs),
			stats(col(x.runs, func(r failoverRun) time.Duration { return r.first })),
			stats(col(x.runs, func(r failoverRun) time.Duration { return r.viaNew })),
			stats(col(x.runs, func(r failoverRun) time.Duration { return r.garpSeen })),
			stats(col(x.runs, func(r failoverRun) time.Duration { return r.dead })),
			slow, after)
	}
	fmt.Fprintf(w, "\nWhere the time goes (each step from the previous one, median / p90 / worst ms; the first five add up to the first connect via the new owner):\n\n")
	fmt.Fprintf(w, "| timers | mode | policy |")
	for _, p := range parts {
		fmt.Fprintf(w, " %s |", p.name)
	}
	fmt.Fprintf(w, "\n| --- | --- | --- |%s\n", strings.Repeat(" --- |", len(parts)))
	for _, x := range rows {
		fmt.Fprintf(w, "| %s | %s | %s |", x.r.name, x.mode, x.policy)
		for _, p := range parts {
			fmt.Fprintf(w, " %s |", stats(col(x.runs, p.of)))
		}
		fmt.Fprintln(w)
	}
	for _, r := range results {
		for _, f := range r.fails {
			fmt.Fprintf(w, "\n%s timers, failed run: %s\n", r.name, f)
		}
	}
	fmt.Fprintln(w)
	for _, r := range results {
		fmt.Fprintf(w, "%s timers, every run (ms from t0):\n\n", r.name)
		for i, x := range r.runs {
			fmt.Fprintf(w, "    %2d %-10s %-7s %s\n", i+1, x.mode, x.policy, x.line())
		}
		fmt.Fprintf(w, "\n(wall time %s)\n\n", r.wall.Round(time.Second))
	}
}
