package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
	"github.com/netloom/netloom/systemd"
)

// TestRestartKeepsSubnetAndTraffic: a SIGTERM'd and restarted agent keeps
// its subnet, its WireGuard companion keeps running, and pods on different
// nodes lose no packet meanwhile. Default gossip timers: a restart must be
// quicker than failure detection, as it is in production.
func TestRestartKeepsSubnetAndTraffic(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 1})
	x.start()
	n2 := x.node(2)
	src, dst := x.pod(1, 1), x.pod(2, 1)

	before := x.status(n2).Node.Subnet
	// The userspace WireGuard companion must outlive the agent (kernel
	// WireGuard has none).
	userspace := wantMode() == "userspace"
	pid, start, err := companionPid(n2)
	if err != nil && userspace {
		t.Fatal(err)
	}

	p := startPinger(t, src, dst)
	p.waitReplies(t, 20, 10*time.Second)

	old := n2.Agent
	p.mark("SIGTERM to " + n2.Name)
	if err := x.c.StopAgent(n2, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.ExitErr(); err != nil {
		t.Errorf("agent %s exited with %v on SIGTERM, want status 0", n2.Name, err)
	}
	if _, _, err := companionPid(n2); err != nil && userspace {
		t.Errorf("the WireGuard companion did not outlive the agent: %v", err)
	}
	p.mark(n2.Name + "'s agent exited")
	if err := x.c.StartAgent(n2); err != nil {
		t.Fatal(err)
	}
	p.mark(n2.Name + "'s agent started")
	x.waitReady()
	p.mark("cluster ready")
	atReady := p.max()
	// Keep pinging a while after the restart, through the agent's first
	// reconcile passes.
	p.waitSeq(t, atReady+40, 20*time.Second)
	res := p.stop(t)
	// Requests before the first answer belong to the cluster's start, not
	// to the restart (TestFirstPacketsAfterStart covers those).
	lost := res.lostAfterFirst()
	t.Logf("ping %s -> %s across the restart of %s: icmp_seq %d..%d sent, %d lost (%d unanswered before the first reply; ping: %s)",
		src.Name, dst.Name, n2.Name, res.first, res.sent, len(lost), res.first-1, res.summary)
	if len(lost) != 0 {
		t.Errorf("%d packets lost across the restart of %s (icmp_seq %v); timeline:\n%s", len(lost), n2.Name, lost, p.timeline(lost))
	}

	after := x.status(n2).Node.Subnet
	if after != before {
		t.Errorf("%s had subnet %s before the restart and %s after", n2.Name, before, after)
	}
	pid2, start2, err := companionPid(n2)
	switch {
	case !userspace:
	case err != nil:
		t.Errorf("after the restart: %v", err)
	case pid2 != pid || start2 != start:
		t.Errorf("WireGuard companion of %s was pid %d before the restart and pid %d after, want the same process", n2.Name, pid, pid2)
	default:
		t.Logf("WireGuard companion of %s: pid %d before and after the restart", n2.Name, pid)
	}
	if err := demo.Ping(dst.NS, src.IP); err != nil {
		t.Errorf("after the restart: ping %s -> %s: %v", dst.Name, src.Name, err)
	}
}

// pinger runs `ping -i 0.05` from one pod to another and records which
// echo requests were answered.
type pinger struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	marks   []string // test events, each after the ping output so far
	got     map[int]bool
	maxSeq  int
	summary string
	out     strings.Builder
}

var (
	replyRE = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
	statsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

func startPinger(t *testing.T, from, to *demo.Pod) *pinger {
	t.Helper()
	// -w bounds it should the test never stop it.
	cmd := exec.CommandContext(context.Background(), "ip", "netns", "exec", from.NS,
		"ping", "-n", "-D", "-O", "-i", "0.05", "-w", "120", to.IP.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ping: %v", err)
	}
	p := &pinger{cmd: cmd, done: make(chan struct{}), got: map[int]bool{}}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			p.mu.Lock()
			p.out.WriteString(l + "\n")
			if m := replyRE.FindStringSubmatch(l); m != nil {
				seq, _ := strconv.Atoi(m[1])
				p.got[seq] = true
				p.maxSeq = max(p.maxSeq, seq)
			}
			if statsRE.MatchString(l) {
				p.summary = strings.TrimSpace(l)
			}
			p.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	return p
}

// mark records a test event in ping's output.
func (p *pinger) mark(event string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.WriteString(fmt.Sprintf("[%.6f] ---- %s\n", float64(time.Now().UnixMicro())/1e6, event))
}

// timeline returns ping's output around the lost requests, with the test's
// events.
func (p *pinger) timeline(lost []int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(p.out.String(), "\n")
	keep := map[int]bool{}
	for i, l := range lines {
		near := strings.Contains(l, " ---- ")
		for _, seq := range lost {
			for d := -3; d <= 3; d++ {
				if strings.Contains(l, fmt.Sprintf("icmp_seq=%d ", seq+d)) || strings.HasSuffix(l, fmt.Sprintf("icmp_seq=%d", seq+d)) {
					near = true
				}
			}
		}
		if near {
			keep[i] = true
		}
	}
	var out []string
	for i, l := range lines {
		if keep[i] {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (p *pinger) max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxSeq
}

func (p *pinger) waitReplies(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d ping replies", n), func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.got) < n {
			return fmt.Errorf("%d replies so far; ping said: %s", len(p.got), firstLines(p.out.String(), 5))
		}
		return nil
	})
}

func (p *pinger) waitSeq(t *testing.T, seq int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("ping replies up to icmp_seq %d", seq), func() error {
		if m := p.max(); m < seq {
			return fmt.Errorf("highest answered icmp_seq is %d", m)
		}
		return nil
	})
}

// pingResult is what a stopped pinger saw. Requests still in flight at the
// interrupt do not count: only those up to the highest one answered.
type pingResult struct {
	sent, recv int
	first      int   // lowest answered icmp_seq, 0 when none
	lost       []int // unanswered icmp_seq, 1..sent
	summary    string
}

// lostAfterFirst are the requests lost after the first answered one.
func (r pingResult) lostAfterFirst() []int {
	var out []int
	for _, s := range r.lost {
		if s > r.first {
			out = append(out, s)
		}
	}
	return out
}

// stop interrupts ping and returns what it saw.
func (p *pinger) stop(t *testing.T) pingResult {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("ping did not end on SIGINT")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r := pingResult{sent: p.maxSeq, summary: p.summary}
	for seq := 1; seq <= p.maxSeq; seq++ {
		if p.got[seq] {
			r.recv++
			if r.first == 0 {
				r.first = seq
			}
		} else {
			r.lost = append(r.lost, seq)
		}
	}
	return r
}

// TestFirstPacketsAfterStart: once a cluster is ready and its pods are
// attached, the very first packets between pods on different nodes are
// answered and none of them leaves a node unencrypted: a node must not
// accept pods before its routes to the other nodes' subnets are in place.
func TestFirstPacketsAfterStart(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 2, PodsPerNode: 1})
	var caps []*capture
	for _, n := range x.c.Nodes {
		caps = append(caps, startCapture(t, n, "eth0"))
	}
	x.start()
	a, b := x.pod(1, 1), x.pod(2, 1)
	pings := []*pinger{startPinger(t, a, b), startPinger(t, b, a)}
	for _, p := range pings {
		p.waitSeq(t, 40, 20*time.Second)
	}
	for i, p := range pings {
		from, to := a, b
		if i == 1 {
			from, to = b, a
		}
		res := p.stop(t)
		t.Logf("first pings %s -> %s: %d sent, %d answered (%s)", from.Name, to.Name, res.sent, res.recv, res.summary)
		if len(res.lost) != 0 {
			t.Errorf("ping %s -> %s right after the pods were attached: icmp_seq %v unanswered, want every request answered", from.Name, to.Name, res.lost)
		}
	}
	for _, c := range caps {
		c.stop(t)
		if n, text := c.count(t, "net "+clusterNet); n != 0 {
			t.Errorf("%d packets with a pod address left %s's eth0 unencrypted:\n%s", n, c.node.Name, firstLines(text, 10))
		}
	}
	for _, n := range x.c.Nodes {
		for _, l := range linesWith(n.LogPath, "level=WARN") {
			if strings.Contains(l, "route") {
				t.Errorf("%s warned about its routes during a clean start: %s", n.Name, l)
			}
		}
		for _, l := range linesWith(n.LogPath, "level=ERROR") {
			t.Errorf("%s logged an error during a clean start: %s", n.Name, l)
		}
	}
	// Once ready, the agent and its companion hand the binary's start-up
	// pages back (systemd.ReleaseStartupPages): each says how much of
	// its resident memory that was.
	for _, n := range x.c.Nodes {
		logs := []string{n.LogPath}
		comp := filepath.Join(n.RunDir, n.WGIface+".log") // userspace WireGuard only
		if _, err := os.Stat(comp); err == nil {
			logs = append(logs, comp)
		}
		for _, path := range logs {
			eventually(t, 10*time.Second, n.Name+" releases its start-up pages ("+path+")", func() error {
				l := linesWith(path, systemd.ReleasedLog)
				if len(l) == 0 {
					return fmt.Errorf("no %q in the log", systemd.ReleasedLog)
				}
				_, v, _ := strings.Cut(l[0], "MiB=")
				if mib, err := strconv.ParseFloat(strings.Fields(v + " ")[0], 64); err != nil || mib <= 0 {
					return fmt.Errorf("want a release of more than 0 MiB, got: %s", l[0])
				}
				return nil
			})
		}
	}
}
