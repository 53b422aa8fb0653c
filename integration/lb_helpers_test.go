package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
)

// lbTimers are the failure-detection timers of the LoadBalancer tests: the
// agent's defaults, spelled out so that the tests keep them if the
// defaults change, with a shorter push/pull.
var lbTimers = []string{
	"--probe-interval", "200ms",
	"--probe-timeout", "150ms",
	"--suspicion-mult", "2",
	"--gossip-interval", "100ms",
	"--push-pull-interval", "5s",
}

// Addresses of the LoadBalancer tests on the demo underlay 10.77.0.0/24
// (bridge .1, nodes .11 and up).
var (
	lbPool       = "10.77.0.200-10.77.0.210"
	lbPoolFirst  = netip.MustParseAddr("10.77.0.200")
	lbPoolLast   = netip.MustParseAddr("10.77.0.210")
	client1Addr  = netip.MustParseAddr("10.77.0.100")
	client2Addr  = netip.MustParseAddr("10.77.0.101")
	serverPort   = 8080 // TCP and UDP, in every pod
	underlayBits = 24
)

// client is a host on the cluster's L2 segment that is not a node: a
// namespace with eth0 on the switch's bridge.
type client struct {
	ns   string
	addr netip.Addr
}

// addClient creates namespace <prefix>-<name> with eth0 (address addr/24)
// plugged into the demo switch's bridge, and removes it at the end of the
// test (before the cluster goes, so the cluster's leftover check passes).
func (x *tc) addClient(name string, addr netip.Addr) *client {
	t := x.t
	t.Helper()
	c := &client{ns: x.c.Opts.Prefix + "-" + name, addr: addr}
	port := "cl-" + name // the bridge port in the switch namespace
	if out, err := exec.Command("ip", "netns", "add", c.ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", c.ns, err, out)
	}
	t.Cleanup(func() {
		// The veth pair goes with the namespace.
		if out, err := exec.Command("ip", "netns", "delete", c.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", c.ns, err, out)
		}
	})
	steps := [][]string{
		{"-n", c.ns, "link", "set", "lo", "up"},
		{"-n", c.ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", x.c.Switch},
		{"-n", x.c.Switch, "link", "set", port, "master", demo.Bridge},
		{"-n", x.c.Switch, "link", "set", port, "up"},
		{"-n", c.ns, "addr", "add", netip.PrefixFrom(addr, underlayBits).String(), "dev", "eth0"},
		{"-n", c.ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("client %s: ip %s: %v: %s", name, strings.Join(s, " "), err, out)
		}
	}
	// The bridge port needs a moment to forward (no STP: it is at once).
	eventually(t, 10*time.Second, "client "+name+" reaches the switch", func() error {
		return demo.Ping(c.ns, x.c.SwitchAddr)
	})
	return c
}

// askTCP connects from namespace ns to addr and returns the answer of the
// server (which closes the connection after one line).
func askTCP(ns string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := demo.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("TCP connect %s -> %s: %w", ns, addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(conn)
	if err != nil {
		return string(b), fmt.Errorf("TCP %s -> %s: read: %w", ns, addr, err)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("TCP %s -> %s: connection closed without an answer", ns, addr)
	}
	return strings.TrimSpace(string(b)), nil
}

// askUDP sends one datagram from namespace ns to addr and returns the
// answer.
func askUDP(ns string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var conn *net.UDPConn
	err := demo.Do(ns, func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("UDP %s -> %s: %w", ns, addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("who\n")); err != nil {
		return "", fmt.Errorf("UDP %s -> %s: send: %w", ns, addr, err)
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("UDP %s -> %s: no answer: %w", ns, addr, err)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// answer is what a pod's server says: its pod name and the address the
// connection came from.
type answer struct {
	pod  string
	peer netip.Addr
}

func parseAnswer(s string) (answer, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return answer{}, fmt.Errorf("answer %q is not \"<pod> <peer address>\"", s)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return answer{}, fmt.Errorf("answer %q: %w", s, err)
	}
	return answer{pod: f[0], peer: ap.Addr()}, nil
}

// node is the node a demo pod belongs to ("node2" for "node2-p1").
func (a answer) node() string {
	n, _, _ := strings.Cut(a.pod, "-")
	return n
}

// startServers starts, inside every pod's namespace, a TCP and a UDP
// server on serverPort that answer every connection or datagram with
// "<pod name> <peer address:port>". They run in the test process (their
// sockets live in the pod namespaces) and stop at the end of the test.
func (x *tc) startServers(pods []*demo.Pod) {
	t := x.t
	t.Helper()
	for _, p := range pods {
		var ln net.Listener
		var pc net.PacketConn
		err := demo.Do(p.NS, func() error {
			var err error
			if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", serverPort)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", serverPort))
			return err
		})
		if err != nil {
			t.Fatalf("servers in pod %s: %v", p.Name, err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s\n", p.Name, c.RemoteAddr())
				c.Close()
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", p.Name, from)), from)
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			pc.Close()
			wg.Wait()
		})
	}
}

// applyYAML writes manifest to a file of the cluster's state directory and
// runs `netloom apply -f` on node n.
func (x *tc) applyYAML(n *demo.Node, manifest string) result {
	x.t.Helper()
	f, err := os.CreateTemp(x.c.Opts.StateDir, "manifest-*.yaml")
	if err != nil {
		x.t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(manifest); err != nil {
		x.t.Fatal(err)
	}
	f.Close()
	return x.cli(n, nil, "apply", "-f", f.Name())
}

// mustApply applies manifest on node n and fails the test when apply fails.
func (x *tc) mustApply(n *demo.Node, manifest string) {
	x.t.Helper()
	if r := x.applyYAML(n, manifest); r.err != nil {
		x.t.Fatalf("apply on %s: %v\nmanifest:\n%s", n.Name, r, manifest)
	}
}

// mustDelete deletes the objects manifest names, on node n.
func (x *tc) mustDelete(n *demo.Node, manifest string) {
	x.t.Helper()
	f := filepath.Join(x.c.Opts.StateDir, "delete-"+randHex(3)+".yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		x.t.Fatal(err)
	}
	defer os.Remove(f)
	if r := x.cli(n, nil, "delete", "-f", f); r.err != nil {
		x.t.Fatalf("delete on %s: %v", n.Name, r)
	}
}

// podsManifest gives Pod objects for the demo pods: every pod gets the
// labels app=web and node=<its node>, plus extra[pod name], and a
// container port named http (serverPort).
func podsManifest(pods []*demo.Pod, extra map[string]map[string]string) string {
	var b strings.Builder
	for _, p := range pods {
		labels := map[string]string{"app": "web", "node": p.Node}
		for k, v := range extra[p.Name] {
			labels[k] = v
		}
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n", p.Name, p.Namespace)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s: %q\n", k, labels[k])
		}
		fmt.Fprintf(&b, "spec:\n  containers:\n  - name: server\n    image: none\n    ports:\n    - name: http\n      containerPort: %d\n", serverPort)
	}
	return b.String()
}

// poolManifest is an AddressPool.
func poolManifest(name string, autoAssign bool, addrs ...string) string {
	return fmt.Sprintf("apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: %s\nspec:\n  autoAssign: %t\n  addresses: [%s]\n",
		name, autoAssign, strings.Join(addrs, ", "))
}

// svcSpec describes a Service for svcManifest.
type svcSpec struct {
	name      string
	typ       string            // LoadBalancer (default) or ClusterIP
	selector  map[string]string // default app=web
	port      int               // default 80
	udp       bool              // also a UDP port of the same number
	lbIP      string            // spec.loadBalancerIP
	pool      string            // annotation netloom.io/address-pool
	local     bool              // externalTrafficPolicy: Local
	ranges    []string          // loadBalancerSourceRanges
	clusterIP string            // spec.clusterIP
}

func svcManifest(s svcSpec) string {
	if s.typ == "" {
		s.typ = "LoadBalancer"
	}
	if s.selector == nil {
		s.selector = map[string]string{"app": "web"}
	}
	if s.port == 0 {
		s.port = 80
	}
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: default\n", s.name)
	if s.pool != "" {
		fmt.Fprintf(&b, "  annotations:\n    netloom.io/address-pool: %s\n", s.pool)
	}
	fmt.Fprintf(&b, "spec:\n  type: %s\n  selector:\n", s.typ)
	keys := make([]string, 0, len(s.selector))
	for k := range s.selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s: %q\n", k, s.selector[k])
	}
	// The TCP port names its target, the UDP port gives a number: both
	// forms of targetPort.
	fmt.Fprintf(&b, "  ports:\n  - name: tcp\n    protocol: TCP\n    port: %d\n    targetPort: http\n", s.port)
	if s.udp {
		fmt.Fprintf(&b, "  - name: udp\n    protocol: UDP\n    port: %d\n    targetPort: %d\n", s.port, serverPort)
	}
	if s.lbIP != "" {
		fmt.Fprintf(&b, "  loadBalancerIP: %s\n", s.lbIP)
	}
	if s.clusterIP != "" {
		fmt.Fprintf(&b, "  clusterIP: %s\n", s.clusterIP)
	}
	if s.local {
		b.WriteString("  externalTrafficPolicy: Local\n")
	}
	if len(s.ranges) > 0 {
		fmt.Fprintf(&b, "  loadBalancerSourceRanges: [%s]\n", strings.Join(s.ranges, ", "))
	}
	return b.String()
}

// svcView is one service as `netloom get services -o json` shows it on one
// node.
type svcView struct {
	clusterIP netip.Addr
	vip       netip.Addr // status.loadBalancer.ingress[0].ip
	owner     string     // annotation netloom.io/announced-by
	pending   string     // annotation netloom.io/pending
	nodePorts [4]uint16  // spec.ports[].nodePort (the first four ports)
	hcPort    uint16     // spec.healthCheckNodePort
}

// services reads `netloom get services -o json` on node n, keyed by name
// (namespace default) or namespace/name.
func (x *tc) services(n *demo.Node) (map[string]svcView, error) {
	items, err := x.getList(n, "services")
	if err != nil {
		return nil, err
	}
	out := map[string]svcView{}
	for _, it := range items {
		md, _ := it["metadata"].(map[string]any)
		name, _ := md["name"].(string)
		if ns, _ := md["namespace"].(string); ns != "" && ns != "default" {
			name = ns + "/" + name
		}
		ann, _ := md["annotations"].(map[string]any)
		spec, _ := it["spec"].(map[string]any)
		st, _ := it["status"].(map[string]any)
		lbst, _ := st["loadBalancer"].(map[string]any)
		var v svcView
		if s, ok := spec["clusterIP"].(string); ok {
			v.clusterIP, _ = netip.ParseAddr(s)
		}
		if ing, ok := lbst["ingress"].([]any); ok && len(ing) > 0 {
			if m, ok := ing[0].(map[string]any); ok {
				s, _ := m["ip"].(string)
				v.vip, _ = netip.ParseAddr(s)
			}
		}
		v.owner, _ = ann["netloom.io/announced-by"].(string)
		v.pending, _ = ann["netloom.io/pending"].(string)
		ports, _ := spec["ports"].([]any)
		for i, p := range ports {
			pm, _ := p.(map[string]any)
			np, _ := pm["nodePort"].(float64)
			if i < len(v.nodePorts) {
				v.nodePorts[i] = uint16(np)
			}
		}
		hc, _ := spec["healthCheckNodePort"].(float64)
		v.hcPort = uint16(hc)
		out[name] = v
	}
	return out, nil
}

// settled waits until every node in nodes shows service name (namespace
// default, or "namespace/name") with the same ClusterIP, the same VIP (when it is a
// LoadBalancer service, wantVIP) and the same announcing node, in `get
// services` and in status, and returns that view.
func (x *tc) settled(name string, wantVIP bool, nodes ...*demo.Node) svcView {
	x.t.Helper()
	return x.settledWhere(name, wantVIP, nil, nodes...)
}

// settledWhere is settled, waiting also until accept (when not nil) takes
// the common view.
func (x *tc) settledWhere(name string, wantVIP bool, accept func(svcView) error, nodes ...*demo.Node) svcView {
	t := x.t
	t.Helper()
	if len(nodes) == 0 {
		nodes = x.c.Nodes
	}
	var got svcView
	eventually(t, 30*time.Second, "every node agrees on service "+name, func() error {
		var first *svcView
		for _, n := range nodes {
			svcs, err := x.services(n)
			if err != nil {
				return err
			}
			v, ok := svcs[name]
			if !ok {
				return fmt.Errorf("%s does not list service %s", n.Name, name)
			}
			if !v.clusterIP.IsValid() {
				return fmt.Errorf("%s: service %s has no clusterIP yet (pending %q)", n.Name, name, v.pending)
			}
			if wantVIP {
				if !v.vip.IsValid() || v.owner == "" {
					return fmt.Errorf("%s: service %s has VIP %v announced by %q (pending %q)", n.Name, name, v.vip, v.owner, v.pending)
				}
				st, err := x.c.Status(t.Context(), n)
				if err != nil {
					return err
				}
				key := name
				if !strings.Contains(key, "/") {
					key = "default/" + name
				}
				vs, ok := vipOf(st, key)
				if !ok || vs.IP != v.vip.String() || vs.Owner != v.owner {
					return fmt.Errorf("%s: status vips has %+v for %s, get services %s by %s", n.Name, vs, key, v.vip, v.owner)
				}
			}
			if first == nil {
				first = &v
				continue
			}
			if v != *first {
				return fmt.Errorf("%s sees service %s as %+v, %s as %+v", n.Name, name, v, nodes[0].Name, *first)
			}
		}
		if accept != nil {
			if err := accept(*first); err != nil {
				return err
			}
		}
		got = *first
		return nil
	})
	return got
}

// vipOf finds the status.vips entry of service ("namespace/name").
func vipOf(st *api.Status, service string) (api.VIPStatus, bool) {
	for _, v := range st.VIPs {
		if v.Service == service {
			return v, true
		}
	}
	return api.VIPStatus{}, false
}

// issueOf finds the status.serviceIssues entry of service ("namespace/name").
func issueOf(st *api.Status, service string) (api.ServiceIssue, bool) {
	for _, is := range st.ServiceIssues {
		if is.Service == service {
			return is, true
		}
	}
	return api.ServiceIssue{}, false
}

// macOf is the MAC address of iface in namespace ns.
func macOf(t *testing.T, ns, iface string) string {
	t.Helper()
	r := inNS(ns, nil, nil, "ip", "-j", "link", "show", iface)
	var ls []struct {
		Address string `json:"address"`
	}
	if r.err != nil || json.Unmarshal([]byte(r.stdout), &ls) != nil || len(ls) != 1 {
		t.Fatalf("MAC of %s in %s: %v", iface, ns, r)
	}
	return strings.ToLower(ls[0].Address)
}

// nodeMACs maps node names to their eth0 MACs.
func (x *tc) nodeMACs() map[string]string {
	out := map[string]string{}
	for _, n := range x.c.Nodes {
		out[n.Name] = macOf(x.t, n.NS, "eth0")
	}
	return out
}

var macRE = regexp.MustCompile(`\[([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})\]`)

// arping sends count ARP requests for target from the client and returns
// the distinct MACs that answered, and arping's output.
func arping(c *client, target netip.Addr, count int) ([]string, string) {
	r := inNS(c.ns, nil, nil, "arping", "-c", fmt.Sprint(count), "-w", fmt.Sprint(count+2), "-I", "eth0", target.String())
	var macs []string
	for _, m := range macRE.FindAllStringSubmatch(r.stdout, -1) {
		mac := strings.ToLower(m[1])
		if !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	return macs, strings.TrimSpace(r.stdout + r.stderr)
}

// neighMAC is the lladdr of the client's neighbour entry for addr ("" when
// it has none) and the entry's state.
func neighMAC(c *client, addr netip.Addr) (string, string, error) {
	r := inNS(c.ns, nil, nil, "ip", "-j", "neigh", "show", addr.String(), "dev", "eth0")
	if r.err != nil {
		return "", "", fmt.Errorf("ip neigh in %s: %v", c.ns, r)
	}
	var es []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
		return "", "", fmt.Errorf("ip neigh in %s: %v: %s", c.ns, err, r.stdout)
	}
	if len(es) == 0 {
		return "", "", nil
	}
	return strings.ToLower(es[0].LLAddr), strings.Join(es[0].State, ","), nil
}

// spread asks addr n times over TCP (or UDP) from namespace ns and returns
// the answers; every failed attempt is an error in errs.
func spread(ns string, addr netip.AddrPort, udp bool, n int) (answers []answer, errs []error) {
	for range n {
		var s string
		var err error
		if udp {
			s, err = askUDP(ns, addr, 2*time.Second)
		} else {
			s, err = askTCP(ns, addr, 2*time.Second)
		}
		if err == nil {
			var a answer
			if a, err = parseAnswer(s); err == nil {
				answers = append(answers, a)
				continue
			}
		}
		errs = append(errs, err)
	}
	return answers, errs
}

// nodesOf lists the distinct nodes that answered, sorted.
func nodesOf(as []answer) []string {
	var out []string
	for _, a := range as {
		if !slices.Contains(out, a.node()) {
			out = append(out, a.node())
		}
	}
	slices.Sort(out)
	return out
}

// eventsWith lists node n's events whose text holds s.
func (x *tc) eventsWith(n *demo.Node, s string) []string {
	r := x.cli(n, nil, "events", "-o", "json")
	if r.err != nil {
		x.t.Errorf("events on %s: %v", n.Name, r)
		return nil
	}
	var out []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, s) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// needTools fails the test when a tool it runs is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: install the test tools (./test.sh does it with apt-get)", tool)
		}
	}
}

// arpWatch is tcpdump printing the ARP packets and TCP resets of a
// client's eth0.
type arpWatch struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// watchARP starts tcpdump on the client's eth0 and returns once it
// listens; stop returns the lines it printed (with link-level headers).
func watchARP(t *testing.T, c *client) *arpWatch {
	t.Helper()
	w := &arpWatch{done: make(chan struct{})}
	// ip netns exec execs tcpdump: the process is tcpdump itself.
	w.cmd = exec.Command("ip", "netns", "exec", c.ns, "tcpdump", "-l", "-e", "-n", "-i", "eth0", "arp or (tcp[tcpflags] & tcp-rst != 0)")
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			if !closed && strings.Contains(sc.Text(), "listening on") {
				close(listening)
				closed = true
			}
		}
	}()
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, strings.ToLower(sc.Text()))
			w.mu.Unlock()
		}
		_ = w.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
	})
	select {
	case <-listening:
	case <-w.done:
		t.Fatal("tcpdump on the client ended before listening")
	case <-time.After(15 * time.Second):
		t.Fatal("tcpdump on the client not listening after 15s")
	}
	return w
}

func (w *arpWatch) stop(t *testing.T) []string {
	_ = w.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Logf("tcpdump did not end on SIGINT; killing it")
		_ = w.cmd.Process.Kill()
		<-w.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}
