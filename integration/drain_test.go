package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/lb/drain"
	"github.com/netloom/netloom/node/demo"
)

// Graceful VIP moves lose no connection (lb/drain): many long-lived TCP
// connections from a client on the LAN that is not a node keep working,
// without one reset, across an agent restart that moves the VIP away and
// back, and across a graceful leave of the VIP's owner.

// echoPort is where the pods' long-lived echo servers listen.
const echoPort = 8081

// drainConns is how many long-lived connections each step holds.
const drainConns = 200

// TestGracefulMoves builds three nodes with two pods each, an echo server
// in every pod and the LoadBalancer service "long" (port 80 to the echo
// servers, externalTrafficPolicy Cluster), then runs Restart and Leave.
func TestGracefulMoves(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "conntrack")
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 2, ExtraAgentArgs: slices.Concat(lbTimers, []string{"--vip-drain-timeout", "60s"})})
	x.start()
	pods := x.c.Pods()
	x.startEchoServers(pods)
	c1 := x.addClient("c1", client1Addr)
	x.mustApply(x.node(1), poolManifest("lan", true, lbPool)+podsManifest(pods, nil)+
		fmt.Sprintf("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: long\n  namespace: default\nspec:\n  type: LoadBalancer\n  selector:\n    app: web\n  ports:\n  - name: tcp\n    protocol: TCP\n    port: 80\n    targetPort: %d\n", echoPort))
	e := &drainEnv{tc: x, c1: c1, macs: x.nodeMACs()}
	e.svc = x.settled("long", true)
	e.vip = netip.AddrPortFrom(e.svc.vip, 80)
	t.Logf("service long: VIP %s announced by %s", e.svc.vip, e.svc.owner)
	// Endpoints follow the Pod objects: wait until pods of every node answer.
	seen := map[string]bool{}
	eventually(t, 30*time.Second, "pods of 3 nodes answer on "+e.vip.String(), func() error {
		c, err := dialEcho(c1.ns, e.vip)
		if err != nil {
			return err
		}
		defer c.close()
		s, err := c.ask("hi")
		if err != nil {
			return err
		}
		seen[nodeOfPod(s)] = true
		if len(seen) < 3 {
			return fmt.Errorf("answers so far from %v", seen)
		}
		return nil
	})
	if !t.Run("Restart", func(t *testing.T) { e.with(t).testRestart(t) }) {
		return
	}
	if err := x.c.WaitReady(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("cluster not ready after the restart: %v", err)
	}
	if !t.Run("LocalMove", func(t *testing.T) { e.with(t).testLocalMove(t, pods) }) {
		return
	}
	e.svc = x.settled("long", true)
	t.Run("Leave", func(t *testing.T) { e.with(t).testLeave(t) })
}

type drainEnv struct {
	*tc
	c1   *client
	macs map[string]string
	svc  svcView
	vip  netip.AddrPort
}

func (e *drainEnv) with(t *testing.T) *drainEnv {
	c := *e
	c.tc = e.tc.with(t)
	return &c
}

// testRestart: the owner's agent stops (SIGTERM: its kernel keeps
// forwarding), the VIP moves to another node, more connections open
// through that node, the agent starts again and takes the VIP back. Every
// connection, old and new, keeps working throughout.
func (e *drainEnv) testRestart(t *testing.T) {
	x := e.tc
	owner := x.c.Node(e.svc.owner)
	load := e.openLoad(t, drainConns)
	defer load.stop()
	load.run()
	time.Sleep(time.Second)

	if err := x.c.StopAgent(owner, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	load.logf("SIGTERM to %s's agent (the VIP's owner)", owner.Name)
	v := x.settledWhere("long", true, movedFrom(owner.Name, e.svc.vip), e.others(owner.Name)...)
	e.waitNeigh(t, v.owner)
	load.logf("VIP moved to %s; the client sends to it", v.owner)
	// Connections opened now are the new owner's.
	more := e.openLoad(t, drainConns/4)
	defer more.stop()
	more.run()
	load.exchange(t, exchangeRounds)
	e.checkForwarded(t, v.owner, "old connections through the stopped agent's node", load)

	if err := x.c.StartAgent(owner); err != nil {
		t.Fatal(err)
	}
	x.waitReady()
	back := x.settled("long", true)
	if back.owner != owner.Name {
		t.Logf("after its restart %s does not own the VIP again (%s does)", owner.Name, back.owner)
	}
	e.waitNeigh(t, back.owner)
	load.logf("agent of %s restarted; VIP announced by %s", owner.Name, back.owner)
	more.exchange(t, exchangeRounds)
	if back.owner == owner.Name {
		e.checkForwarded(t, owner.Name, "connections opened while it was away", more)
	}
	load.finish(t)
	more.finish(t)
}

// testLocalMove: the VIP of an externalTrafficPolicy Local service moves
// because the Pod objects of its owner's endpoints are deleted (their
// servers keep running: a pod on its way out that still serves). The
// connections to them, through the old owner, keep working.
func (e *drainEnv) testLocalMove(t *testing.T, pods []*demo.Pod) {
	x := e.tc
	svc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: loc\n  namespace: default\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector:\n    app: web\n  ports:\n  - name: tcp\n    protocol: TCP\n    port: 80\n    targetPort: %d\n", echoPort)
	x.mustApply(x.node(1), svc)
	t.Cleanup(func() { x.mustDelete(x.node(1), svc) })
	v := x.settled("loc", true)
	le := *e
	le.svc, le.vip = v, netip.AddrPortFrom(v.vip, 80)
	owner := v.owner
	t.Logf("service loc: VIP %s announced by %s", v.vip, owner)
	var mine []*demo.Pod
	for _, p := range pods {
		if p.Node == owner {
			mine = append(mine, p)
		}
	}
	// Every connection goes to a pod of the owner (Local).
	eventually(t, 20*time.Second, "connections to "+le.vip.String()+" reach pods of "+owner, func() error {
		c, err := dialEcho(e.c1.ns, le.vip)
		if err != nil {
			return err
		}
		defer c.close()
		_, err = c.ask("hi")
		return err
	})
	load := le.openLoad(t, drainConns/2)
	defer load.stop()
	for _, p := range load.pods {
		if nodeOfPod(p) != owner {
			t.Fatalf("a connection to the Local VIP of %s reached pod %s", owner, p)
		}
	}
	load.run()
	time.Sleep(time.Second)
	x.mustDelete(x.node(1), podsManifest(mine, nil))
	load.logf("Pod objects of %s deleted (their servers still run)", owner)
	moved := x.settledWhere("loc", true, movedFrom(owner, v.vip))
	le.waitNeigh(t, moved.owner)
	load.logf("VIP moved to %s; the client sends to it", moved.owner)
	load.exchange(t, exchangeRounds)
	le.checkForwarded(t, moved.owner, "connections to the old owner's endpoints", load)
	load.finish(t)
	x.mustApply(x.node(1), podsManifest(mine, nil))
}

// testLeave: the owner leaves gracefully while the connections run; the
// VIP moves, the new owner forwards the old connections, the leaving node
// keeps serving them and goes only once they are closed.
func (e *drainEnv) testLeave(t *testing.T) {
	x := e.tc
	owner := x.c.Node(e.svc.owner)
	load := e.openLoad(t, drainConns)
	defer load.stop()
	load.run()
	time.Sleep(time.Second)

	left := make(chan error, 1)
	start := time.Now()
	go func() { left <- x.c.Leave(context.Background(), owner) }()
	load.logf("netloom leave on %s (the VIP's owner)", owner.Name)
	v := x.settledWhere("long", true, movedFrom(owner.Name, e.svc.vip), e.others(owner.Name)...)
	e.waitNeigh(t, v.owner)
	load.logf("VIP moved to %s; the client sends to it", v.owner)
	load.exchange(t, exchangeRounds)
	e.checkForwarded(t, v.owner, "connections through the leaving node", load)
	select {
	case err := <-left:
		t.Errorf("%s finished leaving (%v) while its connections were open", owner.Name, err)
	default:
	}
	// New connections are the new owner's and work.
	c, err := dialEcho(e.c1.ns, e.vip)
	if err != nil {
		t.Errorf("new connection during the drain: %v", err)
	} else {
		if s, err := c.ask("new"); err != nil || nodeOfPod(s) == owner.Name {
			t.Errorf("new connection during the drain: answer %q, %v (from the leaving node's pods?)", s, err)
		}
		c.close()
	}
	load.finish(t)
	select {
	case err := <-left:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s left %s after the leave began, once its connections were closed", owner.Name, time.Since(start).Round(100*time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still has not left 30 s after its connections were closed", owner.Name)
	}
}

// waitNeigh waits until the client's neighbour entry for the VIP has the
// MAC of node.
func (e *drainEnv) waitNeigh(t *testing.T, node string) {
	t.Helper()
	eventually(t, 20*time.Second, "the client's neighbour entry follows the VIP to "+node, func() error {
		mac, state, err := neighMAC(e.c1, e.svc.vip)
		if err != nil {
			return err
		}
		if mac != e.macs[node] {
			return fmt.Errorf("neighbour %s is %q (%s), want %s (%s)", e.svc.vip, mac, state, e.macs[node], node)
		}
		return nil
	})
}

// checkForwarded checks that node forwards connections of l to another
// node: conntrack entries with a drain's mark.
func (e *drainEnv) checkForwarded(t *testing.T, node, what string, l *load) {
	t.Helper()
	ports := map[string]bool{}
	for _, c := range l.conns {
		ports[fmt.Sprint("sport=", c.c.LocalAddr().(*net.TCPAddr).Port)] = true
	}
	r := inNS(e.c.Node(node).NS, nil, nil, "conntrack", "-L", "-p", "tcp", "-s", e.c1.addr.String(), "-d", e.svc.vip.String())
	n := 0
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		var m uint32
		marked := slices.ContainsFunc(f, func(s string) bool {
			_, err := fmt.Sscanf(s, "mark=%d", &m)
			return err == nil && m&drain.MarkMask != 0
		})
		if marked && slices.ContainsFunc(f, func(s string) bool { return ports[s] }) {
			n++
		}
	}
	if n == 0 {
		t.Errorf("%s forwards none of the %s (no conntrack entry with a drain's mark): %v\n%s", node, what, r.err, firstLines(r.stdout, 5))
		return
	}
	t.Logf("%s forwards %d of %d %s", node, n, len(l.conns), what)
}

// startEchoServers runs, in every pod, a TCP server on echoPort that
// answers each line with "<pod name> <line>" and keeps the connection.
func (x *tc) startEchoServers(pods []*demo.Pod) {
	t := x.t
	t.Helper()
	for _, p := range pods {
		var ln net.Listener
		if err := demo.Do(p.NS, func() error {
			var err error
			ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", echoPort))
			return err
		}); err != nil {
			t.Fatalf("echo server in pod %s: %v", p.Name, err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		conns := map[net.Conn]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() {
						mu.Lock()
						delete(conns, c)
						mu.Unlock()
						c.Close()
					}()
					sc := bufio.NewScanner(c)
					for sc.Scan() {
						fmt.Fprintf(c, "%s %s\n", p.Name, sc.Text())
					}
				}()
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
}

// echoConn is one long-lived connection to the echo servers.
type echoConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialEcho(ns string, addr netip.AddrPort) (*echoConn, error) {
	var c net.Conn
	err := demo.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr.String(), 3*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("TCP connect %s -> %s: %w", ns, addr, err)
	}
	return &echoConn{c: c, r: bufio.NewReader(c)}, nil
}

// ask sends line and returns the pod's answer; a TCP retransmission or
// two fit in its deadline, a reset does not.
func (c *echoConn) ask(line string) (string, error) {
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c.c, line); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	pod, got, _ := strings.Cut(strings.TrimSpace(s), " ")
	if got != line {
		return pod, fmt.Errorf("asked %q, answered %q", line, s)
	}
	return pod, nil
}

func (c *echoConn) close() error {
	// An orderly close: FIN, not a reset (the server closes on EOF).
	if tc, ok := c.c.(*net.TCPConn); ok {
		tc.CloseWrite()
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			return errors.New("data after the close")
		}
	}
	return c.c.Close()
}

// nodeOfPod is the node of a demo pod ("node2" for "node2-p1").
func nodeOfPod(pod string) string {
	n, _, _ := strings.Cut(pod, "-")
	return n
}

// load is a set of long-lived connections, each asking every 200 ms and
// checking the answer comes from the pod that answered first.
type load struct {
	t     *testing.T
	start time.Time
	conns []*echoConn
	pods  []string
	stopc chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	asked atomic.Int64

	mu     sync.Mutex
	failed []string
	resets int
}

// openLoad opens n connections to the VIP; each answers once.
func (e *drainEnv) openLoad(t *testing.T, n int) *load {
	t.Helper()
	l := &load{t: t, start: time.Now(), stopc: make(chan struct{})}
	for i := range n {
		c, err := dialEcho(e.c1.ns, e.vip)
		if err != nil {
			l.stop()
			t.Fatalf("connection %d: %v", i, err)
		}
		pod, err := c.ask("hello")
		if err != nil {
			c.c.Close()
			l.stop()
			t.Fatalf("connection %d: %v", i, err)
		}
		l.conns = append(l.conns, c)
		l.pods = append(l.pods, pod)
	}
	nodes := map[string]int{}
	for _, p := range l.pods {
		nodes[nodeOfPod(p)]++
	}
	t.Logf("%d long-lived connections to %s, to the pods of %v", n, e.vip, nodes)
	return l
}

func (l *load) logf(format string, args ...any) {
	l.t.Helper()
	l.t.Logf("+%s: %s", time.Since(l.start).Round(time.Millisecond), fmt.Sprintf(format, args...))
}

// run starts asking on every connection.
// exchangeRounds is how many round trips each connection makes through a
// new path before the test judges it (about 3 s at one per 200 ms).
const exchangeRounds = 15

// exchange waits until the connections have made rounds more round trips
// each since the call, or one of them failed: a traffic window that
// stretches on a slow machine instead of a fixed sleep.
func (l *load) exchange(t *testing.T, rounds int) {
	t.Helper()
	want := int64(rounds * len(l.conns))
	from := l.asked.Load()
	eventually(t, time.Duration(rounds)*time.Second+30*time.Second, fmt.Sprintf("%d round trips on each of %d connections", rounds, len(l.conns)), func() error {
		l.mu.Lock()
		failed := len(l.failed)
		l.mu.Unlock()
		if done := l.asked.Load() - from; failed == 0 && done < want {
			return fmt.Errorf("%d of %d round trips", done, want)
		}
		return nil
	})
}

func (l *load) run() {
	for i, c := range l.conns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-l.stopc:
					return
				case <-tick.C:
				}
				pod, err := c.ask(fmt.Sprintf("c%d-%d", i, n))
				l.asked.Add(1)
				if err == nil && pod != l.pods[i] {
					err = fmt.Errorf("answered by %s, not %s", pod, l.pods[i])
				}
				if err != nil {
					l.mu.Lock()
					if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
						l.resets++
					}
					l.failed = append(l.failed, fmt.Sprintf("+%s connection %d (pod %s): %v", time.Since(l.start).Round(time.Millisecond), i, l.pods[i], err))
					l.mu.Unlock()
					return
				}
			}
		}()
	}
}

// stop stops asking and closes the connections (abruptly; finish closes
// them in order first).
func (l *load) stop() {
	l.once.Do(func() {
		close(l.stopc)
		l.wg.Wait()
		for _, c := range l.conns {
			c.c.Close()
		}
	})
}

// finish stops asking, closes every connection in order and fails the
// test for every connection that failed.
func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stopc)
	l.wg.Wait()
	var closeErrs []string
	for i, c := range l.conns {
		if err := c.close(); err != nil {
			closeErrs = append(closeErrs, fmt.Sprintf("connection %d: close: %v", i, err))
		}
	}
	l.once.Do(func() {})
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d connections asked %d times: %d failed (%d resets)", len(l.conns), l.asked.Load(), len(l.failed), l.resets)
	if len(l.failed) > 0 {
		t.Errorf("%d of %d long-lived connections failed (%d reset):\n%s", len(l.failed), len(l.conns), l.resets, firstLines(strings.Join(l.failed, "\n"), 20))
	}
	if len(closeErrs) > 0 {
		t.Errorf("closing the connections:\n%s", firstLines(strings.Join(closeErrs, "\n"), 10))
	}
}

func (e *drainEnv) others(name string) []*demo.Node {
	var out []*demo.Node
	for _, n := range e.c.Nodes {
		if n.Name != name {
			out = append(out, n)
		}
	}
	return out
}
