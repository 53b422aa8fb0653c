package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
)

// testNet is a node with two local pods, a "remote node" with one pod
// behind the mesh link, and a client that is not a node:
//
//	client 192.168.50.10 (+ .11)            remote node R           pod p3
//	  c0 ---- n0 192.168.50.1                169.254.77.2 r0 -------- 10.244.2.11
//	          node N  nlwg0 169.254.77.1 ---- (no route to 192.168.50.0/24)
//	          nlbr0 10.244.1.1/24
//	           |- p1 10.244.1.11
//	           '- p2 10.244.1.12
//
// nlwg0 stands in for the WireGuard link: a veth, so that the node routes
// the remote pod subnet through an interface of that name. R has no route
// to the client, so a reply from p3 reaches the client only when N gave
// the connection its own pod gateway address as source.
type testNet struct {
	client, node, remote string
	pods                 map[string]string // pod name -> netns
}

var (
	clientIP  = addr("192.168.50.10")
	client2IP = addr("192.168.50.11")
	nodeIP    = addr("192.168.50.1")
	podIPs    = map[string]netip.Addr{"p1": addr("10.244.1.11"), "p2": addr("10.244.1.12"), "p3": addr("10.244.2.11")}
	gatewayIP = addr("10.244.1.1")
)

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	n := &testNet{client: nfttest.NewNS(t), node: nfttest.NewNS(t), remote: nfttest.NewNS(t), pods: map[string]string{}}
	ip := func(args ...string) { nfttest.Run(t, append([]string{"ip"}, args...)...) }
	sysctl := func(ns, kv string) { nfttest.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", kv) }

	// client <-> node
	ip("-n", n.client, "link", "add", "c0", "type", "veth", "peer", "name", "n0", "netns", n.node)
	ip("-n", n.client, "addr", "add", "192.168.50.10/24", "dev", "c0")
	ip("-n", n.client, "addr", "add", "192.168.50.11/24", "dev", "c0")
	ip("-n", n.client, "link", "set", "c0", "up")
	ip("-n", n.client, "route", "add", "198.51.100.0/24", "via", "192.168.50.1")
	ip("-n", n.node, "addr", "add", "192.168.50.1/24", "dev", "n0")
	ip("-n", n.node, "link", "set", "n0", "up")
	ip("-n", n.node, "route", "add", "default", "via", "192.168.50.10")
	sysctl(n.node, "net.ipv4.ip_forward=1")

	// Node bridge and local pods, configured as node/cni does: isolated
	// ports, proxy ARP between them, so that the node routes between
	// pods. br_netfilter, when loaded, would run the IP hooks inside the
	// bridge and turn a DNAT to a pod behind the same bridge into a
	// bridged frame, which isolated ports (and the hairpin case, the same
	// port) drop: the node must not have bridge-nf-call-iptables on.
	ip("-n", n.node, "link", "add", "nlbr0", "type", "bridge")
	ip("-n", n.node, "addr", "add", "10.244.1.1/24", "dev", "nlbr0")
	ip("-n", n.node, "link", "set", "nlbr0", "up")
	sysctl(n.node, "net.ipv4.conf.nlbr0.proxy_arp_pvlan=1")
	sysctl(n.node, "net.ipv4.conf.nlbr0.send_redirects=0")
	sysctl(n.node, "net.ipv4.conf.all.send_redirects=0")
	sysctl(n.node, "net.ipv4.neigh.nlbr0.proxy_delay=0")
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		sysctl(n.node, "net.bridge.bridge-nf-call-iptables=0")
	}
	for _, p := range []string{"p1", "p2"} {
		ns := nfttest.NewNS(t)
		n.pods[p] = ns
		ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "v"+p, "netns", n.node)
		ip("-n", ns, "addr", "add", podIPs[p].String()+"/24", "dev", "eth0")
		ip("-n", ns, "link", "set", "eth0", "up")
		ip("-n", ns, "route", "add", "default", "via", "10.244.1.1")
		ip("-n", n.node, "link", "set", "v"+p, "master", "nlbr0", "up")
		nfttest.Run(t, "bridge", "-n", n.node, "link", "set", "dev", "v"+p, "isolated", "on")
	}

	// mesh link to the remote node and its pod
	ip("-n", n.node, "link", "add", testWG, "type", "veth", "peer", "name", "r0", "netns", n.remote)
	ip("-n", n.node, "addr", "add", "169.254.77.1/30", "dev", testWG)
	ip("-n", n.node, "link", "set", testWG, "up")
	ip("-n", n.node, "route", "add", "10.244.2.0/24", "via", "169.254.77.2", "dev", testWG, "src", "10.244.1.1")
	ip("-n", n.remote, "addr", "add", "169.254.77.2/30", "dev", "r0")
	ip("-n", n.remote, "link", "set", "r0", "up")
	ip("-n", n.remote, "route", "add", "10.244.1.0/24", "via", "169.254.77.1")
	sysctl(n.remote, "net.ipv4.ip_forward=1")
	p3 := nfttest.NewNS(t)
	n.pods["p3"] = p3
	ip("-n", p3, "link", "add", "eth0", "type", "veth", "peer", "name", "vp3", "netns", n.remote)
	ip("-n", p3, "addr", "add", "10.244.2.11/24", "dev", "eth0")
	ip("-n", p3, "link", "set", "eth0", "up")
	ip("-n", p3, "route", "add", "default", "via", "10.244.2.1")
	ip("-n", n.remote, "addr", "add", "10.244.2.1/24", "dev", "vp3")
	ip("-n", n.remote, "link", "set", "vp3", "up")

	for name, ns := range n.pods {
		serve(t, ns, name)
	}
	return n
}

// serve runs a TCP and a UDP server on port 8080 in ns that answer
// "<name> <client address>".
func serve(t testing.TB, ns, name string) {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	err := nfttest.InNS(ns, func() error {
		var err error
		if tl, err = net.Listen("tcp4", ":8080"); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp4", ":8080")
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, host)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			ul.WriteTo([]byte(name+" "+host+"\n"), from)
		}
	}()
}

// answer is what a server said: its name and the client address it saw.
type answer struct{ server, saw string }

// ask connects from ns (from src when valid) to dst and returns the answer.
func ask(ns, network string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (answer, error) {
	var a answer
	err := nfttest.InNS(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			if network == "udp" {
				d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
			} else {
				d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			}
		}
		c, err := d.Dial(network+"4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if network == "udp" {
			if _, err := c.Write([]byte("hi")); err != nil {
				return err
			}
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return fmt.Errorf("odd answer %q", line)
		}
		a = answer{f[0], f[1]}
		return nil
	})
	return a, err
}

// askMany asks n times and returns the answers seen, by server.
func askMany(t *testing.T, ns, network string, src netip.Addr, dst netip.AddrPort, n int) map[string][]string {
	t.Helper()
	seen := map[string][]string{}
	for i := 0; i < n; i++ {
		a, err := ask(ns, network, src, dst, 2*time.Second)
		if err != nil {
			t.Fatalf("%s %s -> %s (try %d): %v", network, ns, dst, i, err)
		}
		if !slices.Contains(seen[a.server], a.saw) {
			seen[a.server] = append(seen[a.server], a.saw)
		}
	}
	return seen
}

func servers(seen map[string][]string) []string {
	var out []string
	for s := range seen {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func pep(name, node string) lb.Endpoint {
	return lb.Endpoint{PodNamespace: "default", PodName: name, IP: podIPs[name], Node: node, Ready: true}
}

func packetInput(webEndpoints ...string) Input {
	nodeOf := map[string]string{"p1": testNode, "p2": testNode, "p3": "node2"}
	eps := func(names ...string) []lb.Endpoint {
		var out []lb.Endpoint
		for _, n := range names {
			out = append(out, pep(n, nodeOf[n]))
		}
		return out
	}
	web := svc("web", lb.TypeLoadBalancer, "10.96.0.20", "198.51.100.10", tcp(80, 8080), udp(53, 8080))
	local := svc("local", lb.TypeLoadBalancer, "10.96.0.21", "198.51.100.11", tcp(80, 8080))
	local.Service.ExternalTrafficPolicy = lb.PolicyLocal
	ranged := svc("ranged", lb.TypeLoadBalancer, "10.96.0.22", "198.51.100.12", tcp(80, 8080))
	ranged.Service.SourceRanges = []netip.Prefix{netip.PrefixFrom(clientIP, 32)}
	sticky := svc("sticky", lb.TypeLoadBalancer, "10.96.0.23", "198.51.100.13", tcp(80, 8080))
	sticky.Service.SessionAffinity = true
	empty := svc("empty", lb.TypeLoadBalancer, "10.96.0.24", "198.51.100.14", tcp(80, 8080), udp(53, 8080))
	hairpin := svc("hairpin", lb.TypeClusterIP, "10.96.0.25", "", tcp(80, 8080))

	in := Input{
		Node:        testNode,
		ClusterCIDR: testClusterCIDR,
		PodSubnet:   testPodSubnet,
		WGIface:     testWG,
		Services:    []ServiceAddrs{web, local, ranged, sticky, empty, hairpin},
		Endpoints: map[lb.ServiceKey][]lb.Endpoint{
			web.Service.Key():     eps(webEndpoints...),
			local.Service.Key():   eps("p1", "p3"),
			ranged.Service.Key():  eps("p2"),
			sticky.Service.Key():  eps("p1", "p2", "p3"),
			hairpin.Service.Key(): eps("p1"),
		},
	}
	return in
}

func applyProxy(t *testing.T, a *nft.Applier, ns string, in Input) nft.Model {
	t.Helper()
	m := nft.Merge(firewall.Ruleset(firewall.Config{
		ClusterCIDR: in.ClusterCIDR, PodSubnet: in.PodSubnet, Bridge: "nlbr0", WGIface: in.WGIface,
	}), Compile(in))
	if err := a.Apply(m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkListing(t, ns, m)
	return m
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// Real packets through the compiled proxy.
func TestPackets(t *testing.T) {
	nfttest.NeedRoot(t)
	n := newTestNet(t)
	a := nsApplier(t, n.node)
	applyProxy(t, a, n.node, packetInput("p1", "p2", "p3"))

	web := addr("198.51.100.10")
	t.Run("tcp to VIP reaches every endpoint", func(t *testing.T) {
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(web, 80), 40)
		if diff := slices.Compare(servers(seen), []string{"p1", "p2", "p3"}); diff != 0 {
			t.Errorf("servers = %v, want p1 p2 p3", servers(seen))
		}
		// Cluster policy: local endpoints see the client; the remote one
		// sees this node's pod gateway (its reply must come back here).
		for _, p := range []string{"p1", "p2"} {
			if s := seen[p]; len(s) > 0 && !slices.Equal(s, []string{clientIP.String()}) {
				t.Errorf("%s saw %v, want the client %s", p, s, clientIP)
			}
		}
		if s := seen["p3"]; len(s) > 0 && !slices.Equal(s, []string{gatewayIP.String()}) {
			t.Errorf("p3 saw %v, want the node's pod gateway %s", s, gatewayIP)
		}
	})
	t.Run("udp to VIP", func(t *testing.T) {
		seen := askMany(t, n.client, "udp", netip.Addr{}, ap(web, 53), 30)
		if len(seen) < 2 {
			t.Errorf("udp answers came from %v only, want several endpoints", servers(seen))
		}
	})
	t.Run("local policy keeps the client address", func(t *testing.T) {
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(addr("198.51.100.11"), 80), 20)
		if want := map[string][]string{"p1": {clientIP.String()}}; !mapsEqual(seen, want) {
			t.Errorf("answers %v, want only p1 seeing the client: %v", seen, want)
		}
	})
	t.Run("source ranges", func(t *testing.T) {
		vip := ap(addr("198.51.100.12"), 80)
		if _, err := ask(n.client, "tcp", clientIP, vip, 2*time.Second); err != nil {
			t.Errorf("allowed client: %v", err)
		}
		if a, err := ask(n.client, "tcp", client2IP, vip, 500*time.Millisecond); err == nil {
			t.Errorf("client outside the source ranges got an answer from %s", a.server)
		}
	})
	t.Run("affinity", func(t *testing.T) {
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(addr("198.51.100.13"), 80), 15)
		if len(seen) != 1 {
			t.Errorf("ClientIP affinity: answers from %v, want one endpoint", servers(seen))
		}
	})
	t.Run("no endpoints is refused", func(t *testing.T) {
		_, err := ask(n.client, "tcp", netip.Addr{}, ap(addr("198.51.100.14"), 80), 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect to a service without endpoints: %v, want connection refused", err)
		}
		// UDP: ICMP port unreachable, which the socket reports as refused.
		_, err = ask(n.client, "udp", netip.Addr{}, ap(addr("198.51.100.14"), 53), 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("udp to a service without endpoints: %v, want connection refused", err)
		}
	})
	t.Run("pod to ClusterIP keeps the pod address", func(t *testing.T) {
		seen := askMany(t, n.pods["p2"], "tcp", netip.Addr{}, ap(addr("10.96.0.20"), 80), 30)
		if s := seen["p3"]; !slices.Equal(s, []string{podIPs["p2"].String()}) {
			t.Errorf("remote endpoint saw %v, want the pod %s (answers %v)", s, podIPs["p2"], seen)
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		a, err := ask(n.pods["p1"], "tcp", netip.Addr{}, ap(addr("10.96.0.25"), 80), 2*time.Second)
		if err != nil || a.server != "p1" {
			t.Errorf("p1 to its own service: %+v, %v", a, err)
		}
	})
	t.Run("from the node itself", func(t *testing.T) {
		seen := askMany(t, n.node, "tcp", netip.Addr{}, ap(web, 80), 30)
		if len(seen) != 3 {
			t.Errorf("node to VIP: answers from %v, want p1 p2 p3", servers(seen))
		}
		if s := seen["p3"]; len(s) > 0 && !slices.Equal(s, []string{gatewayIP.String()}) {
			t.Errorf("p3 saw %v, want %s", s, gatewayIP)
		}
		// Local policy: the node's own connections go to every endpoint.
		seen = askMany(t, n.node, "tcp", netip.Addr{}, ap(addr("198.51.100.11"), 80), 20)
		if len(seen) != 2 {
			t.Errorf("node to a Local VIP: answers from %v, want p1 p3", servers(seen))
		}
		if _, err := ask(n.node, "tcp", netip.Addr{}, ap(addr("10.96.0.20"), 80), 2*time.Second); err != nil {
			t.Errorf("node to ClusterIP: %v", err)
		}
	})

	// Endpoints follow pods: an incremental update removes p2.
	t.Run("endpoint removed", func(t *testing.T) {
		applyProxy(t, a, n.node, packetInput("p1", "p3"))
		t.Logf("apply: %+v", a.LastApply())
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(web, 80), 30)
		if diff := slices.Compare(servers(seen), []string{"p1", "p3"}); diff != 0 {
			t.Errorf("after removing p2: servers %v, want p1 p3", servers(seen))
		}
	})
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
