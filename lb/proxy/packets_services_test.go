package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft/nfttest"
)

// Real packets through node ports, external IPs, internalTrafficPolicy
// Local and terminating endpoints, in the namespaces of newTestNet. The
// node serves node ports on 192.168.50.1 only (NodePortAddresses); it also
// has 192.168.50.2, where node ports are not served.
var (
	nodeIP2    = addr("192.168.50.2")
	externalIP = addr("203.0.113.10")
	extLocalIP = addr("203.0.113.11")
)

// serveHold runs a TCP server on port 8081 in ns that keeps connections
// open and answers every line with "<name> <line>".
func serveHold(t *testing.T, ns, name string) {
	t.Helper()
	var l net.Listener
	if err := nfttest.InNS(ns, func() (err error) {
		l, err = net.Listen("tcp4", ":8081")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", name, line)
				}
			}()
		}
	}()
}

// held is a long-lived connection from the client.
type held struct {
	c net.Conn
	r *bufio.Reader
}

func dialHeld(t *testing.T, ns string, dst netip.AddrPort) *held {
	t.Helper()
	var c net.Conn
	if err := nfttest.InNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return &held{c: c, r: bufio.NewReader(c)}
}

// echo sends a line on the held connection and returns the server's name.
func (h *held) echo(line string) (string, error) {
	h.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(h.c, line); err != nil {
		return "", err
	}
	got, err := h.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	f := strings.Fields(got)
	if len(f) != 2 || f[1] != line {
		return "", fmt.Errorf("odd echo %q", got)
	}
	return f[0], nil
}

// dropped asserts that a connection from ns to dst gets no answer at all
// (neither an answer nor a refusal).
func dropped(t *testing.T, ns string, dst netip.AddrPort) {
	t.Helper()
	a, err := ask(ns, "tcp", netip.Addr{}, dst, 700*time.Millisecond)
	switch {
	case err == nil:
		t.Errorf("%s: answered by %s, want the connection dropped", dst, a.server)
	case errors.Is(err, syscall.ECONNREFUSED):
		t.Errorf("%s: refused, want dropped", dst)
	}
}

// servicesInput are the services of TestPacketsServices; term are the
// endpoints of service "term" (ports 80 -> 8080 and 81 -> 8081, node ports
// 30087 and 30088).
func servicesInput(term ...lb.Endpoint) Input {
	nodeOf := map[string]string{"p1": testNode, "p2": testNode, "p3": "node2"}
	eps := func(names ...string) []lb.Endpoint {
		var out []lb.Endpoint
		for _, n := range names {
			out = append(out, pep(n, nodeOf[n]))
		}
		return out
	}
	np := func(name, cip, policy string, ports ...uint16) ServiceAddrs {
		s := withNodePorts(svc(name, lb.TypeNodePort, cip, "", tcp(80, 8080), udp(53, 8080)), ports...)
		s.Service.ExternalTrafficPolicy = policy
		return s
	}
	npCluster := np("np-cluster", "10.96.0.40", "", 30080, 30080)
	npLocal := np("np-local", "10.96.0.41", lb.PolicyLocal, 30081)
	npLocalNone := np("np-local-none", "10.96.0.42", lb.PolicyLocal, 30082)
	npEmpty := np("np-empty", "10.96.0.43", "", 30083, 30083)
	ext := svc("ext", lb.TypeClusterIP, "10.96.0.44", "", tcp(80, 8080))
	ext.Service.ExternalIPs = []netip.Addr{externalIP}
	extLocal := svc("ext-local", lb.TypeClusterIP, "10.96.0.45", "", tcp(80, 8080))
	extLocal.Service.ExternalIPs = []netip.Addr{extLocalIP}
	extLocal.Service.ExternalTrafficPolicy = lb.PolicyLocal
	itp := svc("itp", lb.TypeClusterIP, "10.96.0.46", "", tcp(80, 8080))
	itp.Service.InternalTrafficPolicy = lb.PolicyLocal
	itpNone := svc("itp-none", lb.TypeClusterIP, "10.96.0.47", "", tcp(80, 8080))
	itpNone.Service.InternalTrafficPolicy = lb.PolicyLocal
	termSvc := withNodePorts(svc("term", lb.TypeNodePort, "10.96.0.48", "", tcp(80, 8080), tcp(81, 8081)), 30087, 30088)

	return Input{
		Node:              testNode,
		ClusterCIDR:       testClusterCIDR,
		PodSubnet:         testPodSubnet,
		WGIface:           testWG,
		NodePortAddresses: []netip.Prefix{netip.PrefixFrom(nodeIP, 32)},
		Services:          []ServiceAddrs{npCluster, npLocal, npLocalNone, npEmpty, ext, extLocal, itp, itpNone, termSvc},
		Endpoints: map[lb.ServiceKey][]lb.Endpoint{
			npCluster.Service.Key():   eps("p1", "p3"),
			npLocal.Service.Key():     eps("p1", "p3"),
			npLocalNone.Service.Key(): eps("p3"),
			ext.Service.Key():         eps("p1", "p2", "p3"),
			extLocal.Service.Key():    eps("p1", "p3"),
			itp.Service.Key():         eps("p1", "p3"),
			itpNone.Service.Key():     eps("p3"),
			termSvc.Service.Key():     term,
		},
	}
}

// termEp is pod p as an endpoint of "term" with the given conditions.
func termEp(p string, ready, serving, terminating bool) lb.Endpoint {
	e := pep(p, testNode)
	e.Ready, e.Serving, e.Terminating = ready, serving, terminating
	return e
}

func TestPacketsServices(t *testing.T) {
	nfttest.NeedRoot(t)
	n := newTestNet(t)
	nfttest.Run(t, "ip", "-n", n.node, "addr", "add", nodeIP2.String()+"/24", "dev", "n0")
	nfttest.Run(t, "ip", "-n", n.client, "route", "add", "203.0.113.0/24", "via", nodeIP.String())
	for _, p := range []string{"p1", "p2"} {
		serveHold(t, n.pods[p], p)
	}
	a := nsApplier(t, n.node)
	applyProxy(t, a, n.node, servicesInput(termEp("p2", true, true, false)))

	onlyClient := func(t *testing.T, seen map[string][]string, want ...string) {
		t.Helper()
		if !slices.Equal(servers(seen), want) {
			t.Errorf("answers from %v, want %v", servers(seen), want)
		}
		for _, p := range []string{"p1", "p2"} {
			if s := seen[p]; len(s) > 0 && !slices.Equal(s, []string{clientIP.String()}) {
				t.Errorf("%s saw %v, want the client %s", p, s, clientIP)
			}
		}
	}
	t.Run("node port, policy Cluster", func(t *testing.T) {
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(nodeIP, 30080), 30)
		onlyClient(t, seen, "p1", "p3")
		// The remote endpoint sees the pod gateway: its reply comes back
		// through this node.
		if s := seen["p3"]; !slices.Equal(s, []string{gatewayIP.String()}) {
			t.Errorf("p3 saw %v, want the node's pod gateway %s", s, gatewayIP)
		}
		if seen := askMany(t, n.client, "udp", netip.Addr{}, ap(nodeIP, 30080), 20); len(seen) == 0 {
			t.Errorf("udp node port: no answer")
		}
	})
	t.Run("node port only on NodePortAddresses", func(t *testing.T) {
		if a, err := ask(n.client, "tcp", netip.Addr{}, ap(nodeIP2, 30080), 700*time.Millisecond); err == nil {
			t.Errorf("node port on %s (not a node port address) answered by %s", nodeIP2, a.server)
		}
		if a, err := ask(n.pods["p2"], "tcp", netip.Addr{}, ap(gatewayIP, 30080), 700*time.Millisecond); err == nil {
			t.Errorf("node port on the pod gateway answered by %s", a.server)
		}
		if a, err := ask(n.node, "tcp", netip.Addr{}, ap(addr("127.0.0.1"), 30080), 700*time.Millisecond); err == nil {
			t.Errorf("node port on loopback answered by %s", a.server)
		}
	})
	t.Run("node port from the node and from a pod", func(t *testing.T) {
		if seen := askMany(t, n.node, "tcp", netip.Addr{}, ap(nodeIP, 30080), 20); !slices.Equal(servers(seen), []string{"p1", "p3"}) {
			t.Errorf("node to its own node port: answers from %v, want p1 p3", servers(seen))
		}
		seen := askMany(t, n.pods["p2"], "tcp", netip.Addr{}, ap(nodeIP, 30080), 20)
		if s := seen["p3"]; len(s) > 0 && !slices.Equal(s, []string{podIPs["p2"].String()}) {
			t.Errorf("p3 saw %v, want the pod p2", s)
		}
	})
	t.Run("node port, policy Local", func(t *testing.T) {
		onlyClient(t, askMany(t, n.client, "tcp", netip.Addr{}, ap(nodeIP, 30081), 20), "p1")
	})
	t.Run("node port, policy Local, no local endpoint: dropped", func(t *testing.T) {
		dropped(t, n.client, ap(nodeIP, 30082))
		// The node's own connections go to every endpoint.
		if seen := askMany(t, n.node, "tcp", netip.Addr{}, ap(nodeIP, 30082), 5); !slices.Equal(servers(seen), []string{"p3"}) {
			t.Errorf("node to a Local node port: answers from %v, want p3", servers(seen))
		}
	})
	t.Run("node port without endpoints: refused", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			if _, err := ask(n.client, network, netip.Addr{}, ap(nodeIP, 30083), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: %v, want connection refused", network, err)
			}
		}
	})
	t.Run("external IP", func(t *testing.T) {
		seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(externalIP, 80), 40)
		onlyClient(t, seen, "p1", "p2", "p3")
		onlyClient(t, askMany(t, n.client, "tcp", netip.Addr{}, ap(extLocalIP, 80), 20), "p1")
	})
	t.Run("internalTrafficPolicy Local", func(t *testing.T) {
		seen := askMany(t, n.pods["p2"], "tcp", netip.Addr{}, ap(addr("10.96.0.46"), 80), 20)
		if !slices.Equal(servers(seen), []string{"p1"}) {
			t.Errorf("pod to an internal Local ClusterIP: answers from %v, want p1 only", servers(seen))
		}
		dropped(t, n.pods["p2"], ap(addr("10.96.0.47"), 80))
		dropped(t, n.node, ap(addr("10.96.0.47"), 80))
	})

	t.Run("terminating endpoints", func(t *testing.T) {
		// A long-lived connection to p2 while it is ready.
		h := dialHeld(t, n.client, ap(nodeIP, 30088))
		if name, err := h.echo("one"); err != nil || name != "p2" {
			t.Fatalf("held connection: %q, %v; want p2", name, err)
		}
		// p2 terminates (still serving), p1 is ready: new connections
		// avoid p2, the open one continues.
		applyProxy(t, a, n.node, servicesInput(termEp("p1", true, true, false), termEp("p2", false, true, true)))
		if seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(nodeIP, 30087), 30); !slices.Equal(servers(seen), []string{"p1"}) {
			t.Errorf("ready p1 and terminating p2: answers from %v, want p1 only", servers(seen))
		}
		if name, err := h.echo("two"); err != nil || name != "p2" {
			t.Errorf("held connection to terminating p2: %q, %v", name, err)
		}
		// p1 not ready any more: the terminating p2 takes new ones.
		applyProxy(t, a, n.node, servicesInput(termEp("p1", false, false, false), termEp("p2", false, true, true)))
		if seen := askMany(t, n.client, "tcp", netip.Addr{}, ap(nodeIP, 30087), 10); !slices.Equal(servers(seen), []string{"p2"}) {
			t.Errorf("only terminating p2: answers from %v, want p2", servers(seen))
		}
		// p2 stops serving: no endpoint, new connections are refused,
		// and the open one still continues.
		applyProxy(t, a, n.node, servicesInput(termEp("p2", false, false, true)))
		if _, err := ask(n.client, "tcp", netip.Addr{}, ap(nodeIP, 30087), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("no serving endpoint: %v, want connection refused", err)
		}
		if name, err := h.echo("three"); err != nil || name != "p2" {
			t.Errorf("held connection after the endpoints are gone: %q, %v", name, err)
		}
	})
}
