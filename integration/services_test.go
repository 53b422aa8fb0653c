package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// TestServiceTypes checks, from a client on the nodes' L2 segment that is
// not a node, what a cluster without kube-proxy needs of its services:
// NodePort on every node address, externalTrafficPolicy Local with its
// health-check port (200 where the node has endpoints, 503 and a dropped
// nodePort where it has none), externalIPs, internalTrafficPolicy Local,
// the session affinity timeout, terminating endpoints, and ExternalName
// and headless services shown but not proxied.
func TestServiceTypes(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "nft")
	e := newLBEnv(t)

	t.Run("NodePort", func(t *testing.T) { e.with(t).testNodePort(t) })
	t.Run("LocalHealthCheck", func(t *testing.T) { e.with(t).testLocalNodePort(t) })
	t.Run("ExternalIPs", func(t *testing.T) { e.with(t).testExternalIPs(t) })
	t.Run("InternalTrafficPolicy", func(t *testing.T) { e.with(t).testInternalLocal(t) })
	t.Run("AffinityTimeout", func(t *testing.T) { e.with(t).testAffinityTimeout(t) })
	t.Run("Terminating", func(t *testing.T) { e.with(t).testTerminating(t) })
	t.Run("NotProxied", func(t *testing.T) { e.with(t).testNotProxied(t) })
}

const svcHead = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: default\nspec:\n"

// nodePortOf waits until every node shows service name with its node
// ports allocated, the same everywhere, and returns the view.
func (x *tc) nodePortOf(name string) svcView {
	x.t.Helper()
	return x.settledWhere(name, false, func(v svcView) error {
		if v.nodePorts[0] == 0 {
			return fmt.Errorf("no nodePort yet")
		}
		return nil
	})
}

// testNodePort: a NodePort service answers at every node's address, with
// endpoints on every node; get services shows 80:<nodePort>/TCP.
func (e *lbEnv) testNodePort(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(2), fmt.Sprintf(svcHead, "np")+"  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n")
	v := x.nodePortOf("np")
	np := v.nodePorts[0]
	if np < 30000 || np > 32767 {
		t.Errorf("nodePort %d is outside the default range", np)
	}
	for _, n := range x.c.Nodes {
		addr := netip.AddrPortFrom(n.Addr, np)
		eventually(t, 10*time.Second, "nodePort on "+n.Name, func() error {
			_, err := askTCP(e.c1.ns, addr, time.Second)
			return err
		})
		answers, errs := spread(e.c1.ns, addr, false, 30)
		for _, err := range errs {
			t.Errorf("nodePort %s: %v", addr, err)
		}
		if nodes := nodesOf(answers); len(nodes) < 2 {
			t.Errorf("nodePort %s: answered only by pods of %v; want endpoints of several nodes (Cluster)", addr, nodes)
		}
	}
	r := x.cli(x.node(1), nil, "get", "services")
	if want := fmt.Sprintf("80:%d/TCP", np); !strings.Contains(r.stdout, want) {
		t.Errorf("get services does not show %s:\n%s", want, r.stdout)
	}
	// The same port cannot be asked for by another service.
	res := x.applyYAML(x.node(1), fmt.Sprintf(svcHead, "np-dup")+fmt.Sprintf("  type: NodePort\n  ports:\n  - {port: 80, nodePort: %d}\n", np))
	if res.err == nil || !strings.Contains(res.stderr, fmt.Sprintf("%d/TCP is already in use by Service default/np", np)) || strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 {
		t.Errorf("apply of a service asking for np's nodePort: %v", res)
	}
}

// hcGet asks a health-check port.
func hcGet(ns string, addr netip.AddrPort) (int, map[string]any, error) {
	var code int
	var body map[string]any
	// The connection is dialled here, on the thread demo.Do moved into ns:
	// http.Transport would dial on a goroutine of its own, in whatever
	// namespace that thread is in.
	err := demo.Do(ns, func() error {
		conn, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		req, err := http.NewRequest(http.MethodGet, "http://"+addr.String()+"/", nil)
		if err != nil {
			return err
		}
		req.Close = true
		if err := req.Write(conn); err != nil {
			return err
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		code = res.StatusCode
		return json.NewDecoder(res.Body).Decode(&body)
	})
	return code, body, err
}

// testLocalNodePort: a LoadBalancer service with externalTrafficPolicy
// Local whose pods run on node2 and node3: its health-check port answers
// 503 on node1 and 200 with the count on node2; its nodePort on node1 is
// dropped (not forwarded), on node2 it reaches node2's pods with the
// client's address.
func (e *lbEnv) testLocalNodePort(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(1), fmt.Sprintf(svcHead, "np-local")+"  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {zone: b}\n  ports:\n  - {port: 80, targetPort: 8080}\n")
	v := x.settledWhere("np-local", true, func(v svcView) error {
		if v.hcPort == 0 || v.nodePorts[0] == 0 {
			return fmt.Errorf("healthCheckNodePort %d, nodePorts %v", v.hcPort, v.nodePorts)
		}
		return nil
	})
	want := map[string]struct {
		code int
		n    float64
	}{"node1": {503, 0}, "node2": {200, 2}, "node3": {200, 2}}
	for _, n := range x.c.Nodes {
		w := want[n.Name]
		addr := netip.AddrPortFrom(n.Addr, v.hcPort)
		eventually(t, 15*time.Second, "health check on "+n.Name, func() error {
			code, body, err := hcGet(e.c1.ns, addr)
			if err != nil {
				return err
			}
			svc, _ := body["service"].(map[string]any)
			if code != w.code || body["localEndpoints"] != w.n || body["serviceProxyHealthy"] != true || svc["namespace"] != "default" || svc["name"] != "np-local" {
				return fmt.Errorf("%s: %d %v; want %d with localEndpoints %v", addr, code, body, w.code, w.n)
			}
			return nil
		})
	}
	np := v.nodePorts[0]
	addr2 := netip.AddrPortFrom(x.node(2).Addr, np)
	eventually(t, 10*time.Second, "Local nodePort on node2", func() error {
		s, err := askTCP(e.c1.ns, addr2, time.Second)
		if err != nil {
			return err
		}
		a, err := parseAnswer(s)
		if err != nil {
			return err
		}
		if a.node() != "node2" || a.peer != client1Addr {
			return fmt.Errorf("answered by %s seeing %s; want a node2 pod seeing the client %s", a.pod, a.peer, client1Addr)
		}
		return nil
	})
	// node1 has no endpoint of np-local: its nodePort drops (the client
	// times out rather than being forwarded or reset).
	if s, err := askTCP(e.c1.ns, netip.AddrPortFrom(x.node(1).Addr, np), 1500*time.Millisecond); err == nil {
		t.Errorf("Local nodePort on node1 (no local endpoints) answered %q; want it dropped", s)
	} else if !strings.Contains(err.Error(), "timeout") {
		t.Errorf("Local nodePort on node1: %v; want a timeout (dropped), not a refusal", err)
	}
}

// testExternalIPs: an address the operator routes to a node serves the
// service there.
func (e *lbEnv) testExternalIPs(t *testing.T) {
	x := e.tc
	const ext = "10.88.0.50"
	x.mustApply(x.node(1), fmt.Sprintf(svcHead, "ext")+"  externalIPs: ["+ext+"]\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n")
	x.settled("ext", false)
	// The client routes the external address to node3.
	x.must(e.c1.ns, "ip", "route", "replace", ext+"/32", "via", x.node(3).Addr.String())
	t.Cleanup(func() { inNS(e.c1.ns, nil, nil, "ip", "route", "del", ext+"/32") })
	addr := netip.MustParseAddrPort(ext + ":80")
	eventually(t, 10*time.Second, "externalIP answers", func() error {
		_, err := askTCP(e.c1.ns, addr, time.Second)
		return err
	})
	answers, errs := spread(e.c1.ns, addr, false, 30)
	for _, err := range errs {
		t.Errorf("externalIP %s: %v", addr, err)
	}
	if nodes := nodesOf(answers); len(nodes) < 2 {
		t.Errorf("externalIP %s answered only by pods of %v", addr, nodes)
	}
	r := x.cli(x.node(2), nil, "get", "services", "ext")
	if !strings.Contains(r.stdout, ext) {
		t.Errorf("get services ext does not show the external IP:\n%s", r.stdout)
	}
}

// testInternalLocal: with internalTrafficPolicy Local a pod's connections
// to the ClusterIP go only to pods of its own node.
func (e *lbEnv) testInternalLocal(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(1), fmt.Sprintf(svcHead, "itp")+"  internalTrafficPolicy: Local\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n")
	v := x.settled("itp", false)
	addr := netip.AddrPortFrom(v.clusterIP, 80)
	for _, n := range []int{1, 3} {
		p := x.node(n).Pods[0]
		eventually(t, 10*time.Second, "ClusterIP from "+p.Name, func() error {
			_, err := askTCP(p.NS, addr, time.Second)
			return err
		})
		answers, errs := spread(p.NS, addr, false, 20)
		for _, err := range errs {
			t.Errorf("%s -> %s: %v", p.Name, addr, err)
		}
		if nodes := nodesOf(answers); len(nodes) != 1 || nodes[0] != p.Node {
			t.Errorf("%s -> %s (internalTrafficPolicy Local): answered by pods of %v, want only %s", p.Name, addr, nodes, p.Node)
		}
	}
}

// testAffinityTimeout: sessionAffinity ClientIP with a 5 s timeout keeps a
// client on one pod, and the kernel forgets it within the timeout.
func (e *lbEnv) testAffinityTimeout(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(1), fmt.Sprintf(svcHead, "sticky")+"  type: LoadBalancer\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n")
	v := x.settled("sticky", true)
	addr := netip.AddrPortFrom(v.vip, 80)
	eventually(t, 10*time.Second, "sticky answers", func() error {
		_, err := askTCP(e.c1.ns, addr, time.Second)
		return err
	})
	answers, errs := spread(e.c1.ns, addr, false, 15)
	for _, err := range errs {
		t.Errorf("sticky: %v", err)
	}
	pods := map[string]bool{}
	for _, a := range answers {
		pods[a.pod] = true
	}
	if len(pods) != 1 {
		t.Errorf("sticky: answered by %v, want one pod", pods)
	}
	// The owner remembers the client with the service's timeout.
	owner := x.c.Node(v.owner)
	out := x.must(owner.NS, "nft", "list", "table", "inet", "netloom")
	found := false
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, client1Addr.String()) && strings.Contains(l, "timeout 5s") {
			found = true
		}
	}
	if !found {
		t.Errorf("no affinity element for %s with timeout 5s on %s", client1Addr, owner.Name)
	}
	eventually(t, 10*time.Second, "the affinity entry expires", func() error {
		if out := x.must(owner.NS, "nft", "list", "table", "inet", "netloom"); strings.Contains(out, client1Addr.String()+" timeout 5s") {
			return fmt.Errorf("still remembered")
		}
		return nil
	})
}

// namedEchoServer serves, in pod p's namespace on port, connections that answer
// every line with "<pod> <line>" until the client closes.
func (x *tc) namedEchoServer(p *demo.Pod, port int) {
	t := x.t
	var ln net.Listener
	if err := demo.Do(p.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("echo server in %s: %v", p.Name, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", p.Name, sc.Text())
				}
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// line sends one line on c and returns the pod that echoed it.
func line(c net.Conn, s string) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", s); err != nil {
		return "", err
	}
	r, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	pod, rest, _ := strings.Cut(strings.TrimSpace(r), " ")
	if rest != s {
		return "", fmt.Errorf("echo %q, want %q", r, s)
	}
	return pod, nil
}

// podManifest is a Pod object for demo pod p with the given labels and a
// Ready condition, terminating when deleting.
func podManifest(p *demo.Pod, labels map[string]string, ready, deleting bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", p.Name, p.Namespace)
	if deleting {
		b.WriteString("  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n")
	}
	b.WriteString("  labels:\n")
	for k, v := range labels {
		fmt.Fprintf(&b, "    %s: %q\n", k, v)
	}
	status := "True"
	if !ready {
		status = "False"
	}
	fmt.Fprintf(&b, "spec:\n  containers:\n  - name: server\n    image: none\nstatus:\n  conditions:\n  - {type: Ready, status: %q}\n", status)
	return b.String()
}

// testTerminating: a long-lived connection to an endpoint that starts
// terminating keeps working; new connections avoid it while a ready
// endpoint exists, and use the terminating ones when only they remain.
func (e *lbEnv) testTerminating(t *testing.T) {
	x := e.tc
	const port = 9000
	a, b := x.node(2).Pods[0], x.node(3).Pods[0]
	for _, p := range []*demo.Pod{a, b} {
		x.namedEchoServer(p, port)
	}
	labels := func(p *demo.Pod) map[string]string {
		return map[string]string{"app": "web", "node": p.Node, "zone": "b", "long": "yes"}
	}
	x.mustApply(x.node(1), podManifest(a, labels(a), true, false)+podManifest(b, labels(b), true, false)+
		fmt.Sprintf(svcHead, "long")+fmt.Sprintf("  type: LoadBalancer\n  selector: {long: \"yes\"}\n  ports:\n  - {port: %d}\n", port))
	v := x.settled("long", true)
	addr := netip.AddrPortFrom(v.vip, port)

	// Open connections until one lands on each pod.
	open := map[string]net.Conn{}
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	eventually(t, 20*time.Second, "a long connection to each pod", func() error {
		var c net.Conn
		if err := demo.Do(e.c1.ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp4", addr.String(), time.Second)
			return err
		}); err != nil {
			return err
		}
		pod, err := line(c, "hello")
		if err != nil || open[pod] != nil {
			c.Close()
			if err != nil {
				return err
			}
		} else {
			open[pod] = c
		}
		if len(open) < 2 {
			return fmt.Errorf("connections so far to %d pods", len(open))
		}
		return nil
	})

	newConns := func(n int) map[string]int {
		got := map[string]int{}
		for i := range n {
			var c net.Conn
			err := demo.Do(e.c1.ns, func() error {
				var err error
				c, err = net.DialTimeout("tcp4", addr.String(), time.Second)
				return err
			})
			if err != nil {
				t.Errorf("new connection %d: %v", i, err)
				continue
			}
			pod, err := line(c, "new")
			c.Close()
			if err != nil {
				t.Errorf("new connection %d: %v", i, err)
				continue
			}
			got[pod]++
		}
		return got
	}

	// a terminates (still serving): new connections go to b only.
	x.mustApply(x.node(1), podManifest(a, labels(a), true, true))
	eventually(t, 15*time.Second, "new connections avoid the terminating pod", func() error {
		if got := newConns(12); got[a.Name] != 0 || got[b.Name] == 0 {
			return fmt.Errorf("new connections went to %v", got)
		}
		return nil
	})
	for pod, c := range open {
		if got, err := line(c, "still there"); err != nil || got != pod {
			t.Errorf("long connection to %s after %s started terminating: %q, %v", pod, a.Name, got, err)
		}
	}
	// b terminates too: only terminating endpoints remain and they serve.
	x.mustApply(x.node(1), podManifest(b, labels(b), true, true))
	eventually(t, 15*time.Second, "terminating endpoints serve when no ready one is left", func() error {
		if got := newConns(16); got[a.Name] == 0 || got[b.Name] == 0 {
			return fmt.Errorf("new connections went to %v, want both terminating pods", got)
		}
		return nil
	})
	for pod, c := range open {
		if got, err := line(c, "and now"); err != nil || got != pod {
			t.Errorf("long connection to %s with every endpoint terminating: %q, %v", pod, got, err)
		}
	}
	// Put the pods back as they were for later tests.
	x.mustApply(x.node(1), podsManifest([]*demo.Pod{a, b}, map[string]map[string]string{a.Name: {"zone": "b"}, b.Name: {"zone": "b"}}))
}

// testNotProxied: ExternalName and headless services are accepted and
// shown with the reason, and get no address.
func (e *lbEnv) testNotProxied(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(1), fmt.Sprintf(svcHead, "db")+"  type: ExternalName\n  externalName: db.example.com\n"+
		fmt.Sprintf(svcHead, "peers")+"  clusterIP: None\n  selector: {app: web}\n  ports:\n  - {port: 7000}\n")
	for _, n := range x.c.Nodes {
		eventually(t, 10*time.Second, "not-proxied services on "+n.Name, func() error {
			r := x.cli(n, nil, "get", "services")
			var db, peers string
			for _, l := range strings.Split(r.stdout, "\n") {
				f := strings.Fields(l)
				if len(f) > 1 && f[1] == "db" {
					db = l
				}
				if len(f) > 1 && f[1] == "peers" {
					peers = l
				}
			}
			if !strings.Contains(db, "db.example.com") || !strings.Contains(db, "not proxied") ||
				!strings.Contains(peers, "None") || !strings.Contains(peers, "not proxied") {
				return fmt.Errorf("rows: %q, %q", db, peers)
			}
			return nil
		})
	}
}
