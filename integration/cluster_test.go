package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// TestCluster runs the read-only checks on one shared cluster of three
// nodes with two pods each.
func TestCluster(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 2})
	x.start()

	t.Run("Status", func(t *testing.T) { x.with(t).testStatus(t) })
	t.Run("PodConnectivity", func(t *testing.T) { x.with(t).testPodConnectivity(t) })
	t.Run("UnderlayOnlyWireGuard", func(t *testing.T) { x.with(t).testUnderlay(t) })
	t.Run("WGShow", func(t *testing.T) { x.with(t).testWGShow(t) })
	t.Run("GetCNIPods", func(t *testing.T) { x.with(t).testGetCNIPods(t) })
	t.Run("ObjectsReplicate", func(t *testing.T) { x.with(t).testObjects(t) })
}

// wantMode is the WireGuard mode the agents' "auto" must pick here: kernel
// when the module is loaded, else the embedded wireguard-go.
func wantMode() string {
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return "kernel"
	}
	return "userspace"
}

// testStatus: every node's `status -o json` shows the three members alive
// with distinct subnets, with every documented field.
func (x *tc) testStatus(t *testing.T) {
	names := []string{"node1", "node2", "node3"}
	subnets := map[string]string{}
	for _, n := range x.c.Nodes {
		r := x.cli(n, nil, "status", "-o", "json")
		if r.err != nil {
			t.Fatalf("status on %s: %v", n.Name, r)
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
			t.Fatalf("status on %s is not JSON: %v: %s", n.Name, err, r.stdout)
		}
		nodeObj, _ := raw["node"].(map[string]any)
		if nodeObj == nil {
			t.Fatalf("status on %s has no object \"node\": %s", n.Name, r.stdout)
		}
		for _, f := range []string{"name", "address", "subnet", "wireguard"} {
			if _, ok := nodeObj[f]; !ok {
				t.Errorf("status on %s: node.%s missing", n.Name, f)
			}
		}
		wg, _ := nodeObj["wireguard"].(map[string]any)
		for _, f := range []string{"mode", "interface", "publicKey", "port"} {
			if _, ok := wg[f]; !ok {
				t.Errorf("status on %s: node.wireguard.%s missing", n.Name, f)
			}
		}
		members, _ := raw["members"].([]any)
		if len(members) == 0 {
			t.Fatalf("status on %s: no members array: %s", n.Name, r.stdout)
		}
		for i, m := range members {
			mo, _ := m.(map[string]any)
			for _, f := range []string{"name", "address", "state", "subnet", "wireguard"} {
				if _, ok := mo[f]; !ok {
					t.Errorf("status on %s: members[%d].%s missing", n.Name, i, f)
				}
			}
			mw, _ := mo["wireguard"].(map[string]any)
			for _, f := range []string{"publicKey", "endpoint", "lastHandshake", "rxBytes", "txBytes"} {
				if _, ok := mw[f]; !ok {
					t.Errorf("status on %s: members[%d].wireguard.%s missing", n.Name, i, f)
				}
			}
			if hs := mw["lastHandshake"]; hs != nil {
				if s, ok := hs.(string); !ok {
					t.Errorf("status on %s: members[%d].wireguard.lastHandshake = %v, want null or an RFC 3339 time", n.Name, i, hs)
				} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
					t.Errorf("status on %s: members[%d].wireguard.lastHandshake %q: %v", n.Name, i, s, err)
				}
			}
			for _, f := range []string{"rxBytes", "txBytes"} {
				if _, ok := mw[f].(float64); !ok {
					t.Errorf("status on %s: members[%d].wireguard.%s = %v, want a number", n.Name, i, f, mw[f])
				}
			}
		}

		st := x.status(n)
		if st.Node.Name != n.Name {
			t.Errorf("status on %s: node.name %q", n.Name, st.Node.Name)
		}
		if st.Node.Address != n.Addr.String() {
			t.Errorf("status on %s: node.address %q, want %s", n.Name, st.Node.Address, n.Addr)
		}
		p, err := netip.ParsePrefix(st.Node.Subnet)
		if err != nil || !netip.MustParsePrefix(clusterNet).Contains(p.Addr()) || p.Bits() != 24 {
			t.Errorf("status on %s: node.subnet %q, want a /24 inside %s", n.Name, st.Node.Subnet, clusterNet)
		}
		subnets[n.Name] = st.Node.Subnet
		w := st.Node.WireGuard
		if w.Mode != wantMode() {
			t.Errorf("status on %s: wireguard.mode %q, want %q", n.Name, w.Mode, wantMode())
		}
		if w.Interface != n.WGIface {
			t.Errorf("status on %s: wireguard.interface %q, want %q", n.Name, w.Interface, n.WGIface)
		}
		if w.Port != wgPort {
			t.Errorf("status on %s: wireguard.port %d, want %d", n.Name, w.Port, wgPort)
		}
		if len(w.PublicKey) != 44 {
			t.Errorf("status on %s: wireguard.publicKey %q is not a base64 key", n.Name, w.PublicKey)
		}
		var alive []string
		for _, m := range st.Members {
			if m.State == "alive" {
				alive = append(alive, m.Name)
			}
			if m.WireGuard.PublicKey == "" {
				t.Errorf("status on %s: member %s has no wireguard.publicKey", n.Name, m.Name)
			}
			if m.Address == "" {
				t.Errorf("status on %s: member %s has no address", n.Name, m.Name)
			}
		}
		slices.Sort(alive)
		if !slices.Equal(alive, names) {
			t.Errorf("status on %s: alive members %v, want %v", n.Name, alive, names)
		}
	}
	seen := map[string]string{}
	for name, s := range subnets {
		if o, dup := seen[s]; dup {
			t.Errorf("nodes %s and %s have the same subnet %s", o, name, s)
		}
		seen[s] = name
	}
	// Every node sees every member with that member's own subnet and key.
	for _, n := range x.c.Nodes {
		st := x.status(n)
		for _, o := range x.c.Nodes {
			m, ok := member(st, o.Name)
			if !ok {
				t.Errorf("%s does not list %s", n.Name, o.Name)
				continue
			}
			if m.Subnet != subnets[o.Name] {
				t.Errorf("%s sees subnet %q for %s, which has %s", n.Name, m.Subnet, o.Name, subnets[o.Name])
			}
			if m.Address != o.Addr.String() {
				t.Errorf("%s sees address %q for %s, want %s", n.Name, m.Address, o.Name, o.Addr)
			}
			if want := x.status(o).Node.WireGuard.PublicKey; m.WireGuard.PublicKey != want {
				t.Errorf("%s sees key %q for %s, which has %q", n.Name, m.WireGuard.PublicKey, o.Name, want)
			}
		}
	}
}

// pods returns pod i (1-based) of node n.
func (x *tc) pod(node, i int) *demo.Pod {
	x.t.Helper()
	n := x.node(node)
	if len(n.Pods) < i {
		x.t.Fatalf("node %s has %d pods, want at least %d", n.Name, len(n.Pods), i)
	}
	return n.Pods[i-1]
}

// testPodConnectivity: every pod reaches every other pod by ICMP; TCP
// payloads round-trip across nodes and on one node.
func (x *tc) testPodConnectivity(t *testing.T) {
	pods := x.c.Pods()
	if len(pods) != 6 {
		t.Fatalf("%d pods, want 6", len(pods))
	}
	for _, from := range pods {
		for _, to := range pods {
			if from == to {
				continue
			}
			if err := demo.Ping(from.NS, to.IP); err != nil {
				t.Errorf("ping %s (%s, %s) -> %s (%s, %s): %v", from.Name, from.IP, from.Node, to.Name, to.IP, to.Node, err)
			}
		}
	}

	// Echo servers: one on node2 (reached from nodes 1 and 3), one on node1
	// (reached from the other pod of node1).
	far, near := x.pod(2, 1), x.pod(1, 2)
	x.echoServer(t, far, 7070)
	x.echoServer(t, near, 7070)
	small := []byte("netloom says hello " + randHex(8) + "\n")
	big := []byte(strings.Repeat(randHex(32)+"\n", 8192)) // 528 KiB: many full-size segments
	cases := []struct {
		from, to *demo.Pod
		payload  []byte
	}{
		{x.pod(1, 1), far, small},
		{x.pod(3, 2), far, small},
		{x.pod(1, 1), far, big},
		{x.pod(1, 1), near, small},
		{x.pod(1, 1), near, big},
	}
	for _, c := range cases {
		got, err := x.tcpEcho(c.from, c.to, 7070, c.payload)
		if err != nil {
			t.Errorf("TCP %s (%s) -> %s (%s): %v", c.from.Name, c.from.Node, c.to.Name, c.to.Node, err)
			continue
		}
		if string(got) != string(c.payload) {
			t.Errorf("TCP %s -> %s: %d bytes sent, %d bytes came back (differ)", c.from.Name, c.to.Name, len(c.payload), len(got))
		}
	}
}

// echoServer starts a TCP echo server (socat + cat) in pod p's namespace and
// waits until it accepts connections.
func (x *tc) echoServer(t *testing.T, p *demo.Pod, port int) {
	t.Helper()
	proc, err := x.c.StartProcess(fmt.Sprintf("echo-%s-%d", p.Name, port), p.NS,
		"socat", fmt.Sprintf("TCP4-LISTEN:%d,reuseaddr,fork", port), "EXEC:cat")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.c.StopProcess(proc) })
	eventually(t, 10*time.Second, "echo server in "+p.Name+" listens", func() error {
		r := inNS(p.NS, nil, nil, "ss", "-Htln", fmt.Sprintf("sport = :%d", port))
		if r.err != nil || !strings.Contains(r.stdout, strconv.Itoa(port)) {
			return fmt.Errorf("not listening: %v", r)
		}
		return nil
	})
}

// tcpEcho sends payload from pod from to the echo server of pod to and
// returns what came back.
func (x *tc) tcpEcho(from, to *demo.Pod, port int, payload []byte) ([]byte, error) {
	r := inNS(from.NS, nil, payload, "socat", "-t", "5", "-T", "15", "-",
		fmt.Sprintf("TCP4:%s:%d,connect-timeout=5", to.IP, port))
	if r.err != nil {
		return nil, fmt.Errorf("socat client: %v (stderr %q)", r.err, r.stderr)
	}
	return []byte(r.stdout), nil
}

// testUnderlay captures node1's eth0 while pods of node1 and node2 talk:
// no packet may carry a pod address, the traffic must be WireGuard UDP.
func (x *tc) testUnderlay(t *testing.T) {
	n1 := x.node(1)
	src, dst := x.pod(1, 1), x.pod(2, 2)
	x.echoServer(t, dst, 7071)
	cp := startCapture(t, n1, "eth0")

	// Traffic: ICMP both ways, TCP with a payload.
	for _, p := range [][2]*demo.Pod{{src, dst}, {dst, src}} {
		r := inNS(p[0].NS, nil, nil, "ping", "-n", "-q", "-c", "5", "-i", "0.05", "-w", "5", p[1].IP.String())
		if r.err != nil {
			t.Errorf("ping %s -> %s during the capture: %v", p[0].Name, p[1].Name, r)
		}
	}
	payload := []byte(strings.Repeat("pod-to-pod over the underlay "+randHex(4)+"\n", 200))
	if got, err := x.tcpEcho(src, dst, 7071, payload); err != nil || string(got) != string(payload) {
		t.Errorf("TCP %s -> %s during the capture: err %v, %d of %d bytes back", src.Name, dst.Name, err, len(got), len(payload))
	}
	cp.stop(t)

	total, _ := cp.count(t, "")
	podPkts, podText := cp.count(t, "net "+clusterNet)
	wgPkts, _ := cp.count(t, fmt.Sprintf("udp port %d", wgPort))
	other, otherText := cp.count(t, fmt.Sprintf("ip and not udp port %d and not port %d", wgPort, gossipPort))
	t.Logf("captured %d packets: %d WireGuard UDP, %d with a pod address, %d other IPv4 (not WireGuard, not gossip)", total, wgPkts, podPkts, other)
	if podPkts != 0 {
		t.Errorf("%d packets on the underlay carry a pod address (want 0):\n%s", podPkts, firstLines(podText, 10))
	}
	if wgPkts == 0 {
		t.Errorf("no WireGuard UDP (port %d) seen on %s eth0 while pods talked", wgPort, n1.Name)
	}
	if other != 0 {
		t.Errorf("%d IPv4 packets on the underlay are neither WireGuard nor gossip:\n%s", other, firstLines(otherText, 10))
	}
}

// capture is a tcpdump writing one interface of a node to a file.
type capture struct {
	node    *demo.Node
	iface   string
	file    string
	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
	errText strings.Builder
}

// startCapture starts tcpdump on iface in node n's namespace and returns
// once it listens. The capture ends at stop, at the end of the test, or
// after 120 seconds (timeout), whichever comes first.
func startCapture(t *testing.T, n *demo.Node, iface string) *capture {
	t.Helper()
	c := &capture{node: n, iface: iface, done: make(chan struct{}),
		file: filepath.Join(filepath.Dir(n.DataDir), iface+"-"+randHex(2)+".pcap")}
	c.cmd = exec.Command("ip", "netns", "exec", n.NS,
		"timeout", "120", "tcpdump", "-i", iface, "-n", "--immediate-mode", "-U", "-w", c.file)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	listening := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			c.mu.Lock()
			c.errText.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if !closed && strings.Contains(sc.Text(), "listening on") {
				close(listening)
				closed = true
			}
		}
		io.Copy(io.Discard, stderr)
		_ = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	select {
	case <-listening:
	case <-c.done:
		t.Fatalf("tcpdump on %s %s ended before listening: %s", n.Name, iface, c.stderr())
	case <-time.After(15 * time.Second):
		t.Fatalf("tcpdump on %s %s not listening after 15s: %s", n.Name, iface, c.stderr())
	}
	return c
}

func (c *capture) stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.errText.String())
}

// stop ends the capture: tcpdump (under timeout, which passes the signal
// on) writes its file out on SIGINT.
func (c *capture) stop(t *testing.T) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	t.Logf("capture on %s %s: %s", c.node.Name, c.iface, strings.ReplaceAll(c.stderr(), "\n", "; "))
}

// count reads the stopped capture with a filter and returns the number of
// matching packets and their tcpdump lines.
func (c *capture) count(t *testing.T, filter string) (int, string) {
	t.Helper()
	r := inNS(c.node.NS, nil, nil, "tcpdump", "-n", "-r", c.file, filter)
	if r.err != nil {
		t.Fatalf("tcpdump -r %s %q: %v", c.file, filter, r)
	}
	out := strings.TrimSpace(r.stdout)
	if out == "" {
		return 0, ""
	}
	return len(strings.Split(out, "\n")), out
}

func firstLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = append(l[:n], "...")
	}
	return strings.Join(l, "\n")
}

// testWGShow: `wg show` on every node lists the two other nodes as peers,
// each with exactly its subnet as allowed IPs and its underlay endpoint.
func (x *tc) testWGShow(t *testing.T) {
	type info struct{ key, subnet, endpoint string }
	nodes := map[string]info{}
	for _, n := range x.c.Nodes {
		st := x.status(n)
		nodes[n.Name] = info{st.Node.WireGuard.PublicKey, st.Node.Subnet, fmt.Sprintf("%s:%d", n.Addr, wgPort)}
	}
	// Traffic between every pair of nodes, so that every peer has had a
	// handshake.
	for _, a := range x.c.Nodes {
		for _, b := range x.c.Nodes {
			if a != b {
				if err := demo.Ping(a.Pods[0].NS, b.Pods[0].IP); err != nil {
					t.Errorf("ping %s -> %s: %v", a.Pods[0].Name, b.Pods[0].Name, err)
				}
			}
		}
	}
	for _, n := range x.c.Nodes {
		// status shows the peers' WireGuard statistics.
		st := x.status(n)
		for _, m := range st.Members {
			if m.Name == n.Name {
				continue
			}
			w := m.WireGuard
			if w.Endpoint != nodes[m.Name].endpoint {
				t.Errorf("status on %s: member %s endpoint %q, want %s", n.Name, m.Name, w.Endpoint, nodes[m.Name].endpoint)
			}
			if w.LastHandshake == nil || w.LastHandshake.IsZero() {
				t.Errorf("status on %s: member %s has no lastHandshake after traffic", n.Name, m.Name)
			}
			if w.RxBytes <= 0 || w.TxBytes <= 0 {
				t.Errorf("status on %s: member %s rxBytes %d, txBytes %d after traffic, want both > 0", n.Name, m.Name, w.RxBytes, w.TxBytes)
			}
		}

		peers, err := x.wgPeers(n)
		if err != nil {
			t.Fatal(err)
		}
		eps, err := x.wgEndpoints(n)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{}
		for _, o := range x.c.Nodes {
			if o != n {
				want[nodes[o.Name].key] = []string{nodes[o.Name].subnet}
			}
		}
		if len(peers) != 2 {
			t.Errorf("wg show %s on %s: %d peers, want 2: %v", n.WGIface, n.Name, len(peers), peers)
		}
		for _, o := range x.c.Nodes {
			if o == n {
				continue
			}
			in := nodes[o.Name]
			got, ok := peers[in.key]
			if !ok {
				t.Errorf("wg show %s on %s: no peer for %s (key %s)", n.WGIface, n.Name, o.Name, in.key)
				continue
			}
			if !slices.Equal(got, want[in.key]) {
				t.Errorf("wg show %s on %s: peer %s allowed IPs %v, want %v", n.WGIface, n.Name, o.Name, got, want[in.key])
			}
			if eps[in.key] != in.endpoint {
				t.Errorf("wg show %s on %s: peer %s endpoint %q, want %s", n.WGIface, n.Name, o.Name, eps[in.key], in.endpoint)
			}
			routes, err := x.routeTo(n, netip.MustParsePrefix(in.subnet))
			if err != nil {
				t.Fatal(err)
			}
			if len(routes) != 1 || !strings.Contains(routes[0], "dev "+n.WGIface) {
				t.Errorf("%s: route to %s's subnet %s: %q, want one route via %s", n.Name, o.Name, in.subnet, routes, n.WGIface)
			}
		}
	}
}

// testObjects: apply on node1 is seen on node3; delete removes everywhere;
// a malformed file applies nothing and fails with one line.
func (x *tc) testObjects(t *testing.T) {
	n1, n3 := x.node(1), x.node(3)
	ns := "it-" + randHex(3)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels:
    team: blue
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: %[1]s
  labels:
    app: web
    tier: front
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports:
    - containerPort: 80
`, ns)
	file := filepath.Join(x.c.Opts.StateDir, "objects.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	r := x.cli(n1, nil, "apply", "-f", file)
	if r.err != nil {
		t.Fatalf("apply on node1: %v", r)
	}
	t.Logf("apply: %s", strings.TrimSpace(r.stdout))
	if !strings.Contains(r.stdout, "created") {
		t.Errorf("apply printed %q, want the objects reported as created", r.stdout)
	}

	present := func(n *demo.Node) error {
		nss, err := x.getList(n, "namespaces")
		if err != nil {
			return err
		}
		nsObj := find(nss, "", ns)
		if nsObj == nil {
			return fmt.Errorf("%s: namespace %s not listed", n.Name, ns)
		}
		if l := labelsOf(nsObj); l["team"] != "blue" {
			return fmt.Errorf("%s: namespace %s labels %v, want team=blue", n.Name, ns, l)
		}
		pods, err := x.getList(n, "pods")
		if err != nil {
			return err
		}
		pod := find(pods, ns, "web")
		if pod == nil {
			return fmt.Errorf("%s: pod %s/web not listed", n.Name, ns)
		}
		if l := labelsOf(pod); l["app"] != "web" || l["tier"] != "front" || len(l) != 2 {
			return fmt.Errorf("%s: pod %s/web labels %v, want app=web, tier=front", n.Name, ns, l)
		}
		return nil
	}
	eventually(t, 20*time.Second, "objects applied on node1 readable on node3", func() error { return present(n3) })
	for _, n := range x.c.Nodes {
		eventually(t, 20*time.Second, "objects on "+n.Name, func() error { return present(n) })
	}

	r = x.cli(n1, nil, "delete", "-f", file)
	if r.err != nil {
		t.Fatalf("delete on node1: %v", r)
	}
	t.Logf("delete: %s", strings.TrimSpace(r.stdout))
	for _, n := range x.c.Nodes {
		eventually(t, 20*time.Second, "objects deleted on "+n.Name, func() error {
			if err := present(n); err == nil || !strings.Contains(err.Error(), "not listed") {
				return fmt.Errorf("%s still lists the objects (%v)", n.Name, err)
			}
			pods, err := x.getList(n, "pods")
			if err != nil {
				return err
			}
			nss, err := x.getList(n, "namespaces")
			if err != nil {
				return err
			}
			if find(pods, ns, "web") != nil || find(nss, "", ns) != nil {
				return fmt.Errorf("%s still lists namespace %s or pod %s/web", n.Name, ns, ns)
			}
			return nil
		})
	}

	// A malformed file: the first document is fine, the second has a bad
	// label value. Nothing of it may be stored.
	bad := "bad-" + randHex(3)
	badManifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
  namespace: %[1]s
  labels:
    app: "a b"
spec:
  containers:
  - name: c
    image: busybox
`, bad)
	badFile := filepath.Join(x.c.Opts.StateDir, "bad.yaml")
	if err := os.WriteFile(badFile, []byte(badManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	r = x.cli(n1, nil, "apply", "-f", badFile)
	t.Logf("apply of the malformed file: exit %d, stdout %q, stderr %q", r.exitCode(), r.stdout, r.stderr)
	if r.exitCode() <= 0 {
		t.Errorf("apply of a malformed file exited %d, want non-zero", r.exitCode())
	}
	errLines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if strings.TrimSpace(r.stderr) == "" || len(errLines) != 1 {
		t.Errorf("apply of a malformed file printed %d error lines, want 1: %q", len(errLines), r.stderr)
	} else if !strings.Contains(r.stderr, "document 2") || !strings.Contains(r.stderr, "a b") {
		t.Errorf("apply error %q does not name document 2 and the bad value", r.stderr)
	}
	if strings.TrimSpace(r.stdout) != "" {
		t.Errorf("apply of a malformed file printed results: %q", r.stdout)
	}
	// A later good object arriving everywhere shows that gossip has had its
	// chance to carry the bad ones, had any been stored.
	sentinel := "sentinel-" + randHex(3)
	sfile := filepath.Join(x.c.Opts.StateDir, "sentinel.yaml")
	if err := os.WriteFile(sfile, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+sentinel+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := x.cli(n1, nil, "apply", "-f", sfile); r.err != nil {
		t.Fatalf("apply sentinel: %v", r)
	}
	for _, n := range x.c.Nodes {
		eventually(t, 20*time.Second, "sentinel namespace on "+n.Name, func() error {
			nss, err := x.getList(n, "namespaces")
			if err != nil {
				return err
			}
			if find(nss, "", sentinel) == nil {
				return fmt.Errorf("%s: namespace %s not listed", n.Name, sentinel)
			}
			return nil
		})
		nss, err := x.getList(n, "namespaces")
		if err != nil {
			t.Fatal(err)
		}
		pods, err := x.getList(n, "pods")
		if err != nil {
			t.Fatal(err)
		}
		if find(nss, "", bad) != nil {
			t.Errorf("%s stores namespace %s from the malformed file", n.Name, bad)
		}
		if find(pods, bad, "broken") != nil {
			t.Errorf("%s stores pod %s/broken from the malformed file", n.Name, bad)
		}
	}
	if r := x.cli(n1, nil, "delete", "-f", sfile); r.err != nil {
		t.Errorf("delete sentinel: %v", r)
	}
}

// testGetCNIPods: pods attached by CNI alone (no Pod manifest) are listed
// by `get pods` and by `get pods -o json` alike, with their address and
// node, on every node.
func (x *tc) testGetCNIPods(t *testing.T) {
	want := map[string]*demo.Pod{}
	for _, p := range x.c.Pods() {
		want[p.Namespace+"/"+p.Name] = p
	}
	for _, n := range x.c.Nodes {
		eventually(t, 10*time.Second, "get pods on "+n.Name+" lists every CNI pod in the table and in JSON", func() error {
			items, err := x.getList(n, "pods")
			if err != nil {
				return err
			}
			got := map[string]bool{}
			for _, it := range items {
				meta, _ := it["metadata"].(map[string]any)
				spec, _ := it["spec"].(map[string]any)
				status, _ := it["status"].(map[string]any)
				key := fmt.Sprint(meta["namespace"], "/", meta["name"])
				p, ok := want[key]
				if !ok {
					return fmt.Errorf("get pods -o json lists %s, which no CNI ADD attached", key)
				}
				if status["podIP"] != p.IP.String() || spec["nodeName"] != p.Node {
					return fmt.Errorf("get pods -o json: %s has podIP %v nodeName %v, want %s on %s", key, status["podIP"], spec["nodeName"], p.IP, p.Node)
				}
				got[key] = true
			}
			if len(got) != len(want) {
				return fmt.Errorf("get pods -o json lists %d pods, want %d", len(got), len(want))
			}
			r := x.cli(n, nil, "get", "pods")
			if r.err != nil {
				return fmt.Errorf("get pods: %v", r)
			}
			for key, p := range want {
				ns, name, _ := strings.Cut(key, "/")
				found := false
				for _, l := range strings.Split(r.stdout, "\n") {
					f := strings.Fields(l)
					if len(f) >= 4 && f[0] == ns && f[1] == name && f[2] == p.IP.String() && f[3] == p.Node {
						found = true
					}
				}
				if !found {
					return fmt.Errorf("get pods table lacks %s %s %s:\n%s", key, p.IP, p.Node, r.stdout)
				}
			}
			return nil
		})
	}
}
