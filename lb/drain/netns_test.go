package drain

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// lan is a client and two nodes on one L2 segment (a bridge in a switch
// namespace): the old owner A serves the VIP (a DNAT to a server of its
// own, standing in for the service proxy and a pod), the new owner B has
// the same kind of DNAT to a server of its own, and the drain towards A.
//
//	client 10.50.0.100 --+
//	A      10.50.0.11  --+-- br0 (switch)      VIP 10.50.0.200:80
//	B      10.50.0.12  --+
type lan struct {
	client, a, b string
	macA, macB   string
}

var (
	lanVIP = netip.MustParseAddr("10.50.0.200")
	lanA   = netip.MustParseAddr("10.50.0.11")
)

func newLAN(t *testing.T) *lan {
	t.Helper()
	sw := nfttest.NewNS(t)
	l := &lan{client: nfttest.NewNS(t), a: nfttest.NewNS(t), b: nfttest.NewNS(t)}
	ip := func(args ...string) { nfttest.Run(t, append([]string{"ip"}, args...)...) }
	ip("-n", sw, "link", "add", "br0", "type", "bridge")
	ip("-n", sw, "link", "set", "br0", "up")
	for i, h := range []struct{ ns, addr string }{{l.client, "10.50.0.100"}, {l.a, "10.50.0.11"}, {l.b, "10.50.0.12"}} {
		port := fmt.Sprintf("p%d", i)
		ip("-n", h.ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", sw)
		ip("-n", sw, "link", "set", port, "master", "br0", "up")
		ip("-n", h.ns, "addr", "add", h.addr+"/24", "dev", "eth0")
		ip("-n", h.ns, "link", "set", "eth0", "up")
	}
	for _, ns := range []string{l.a, l.b} {
		nfttest.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		self := map[string]string{l.a: "10.50.0.11", l.b: "10.50.0.12"}[ns]
		// Stand-in for the service proxy: VIP:80 -> a server on the node.
		script := fmt.Sprintf("table inet proxy {\n chain svc-prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr %s tcp dport 80 dnat ip to %s:8080\n }\n}\n", lanVIP, self)
		if out, err := nsRun(ns, script, "nft", "-f", "-"); err != nil {
			t.Fatalf("proxy stand-in in %s: %v: %s", ns, err, out)
		}
		name := map[string]string{l.a: "A", l.b: "B"}[ns]
		echoServer(t, ns, name)
	}
	nfttest.Run(t, "ip", "netns", "exec", l.b, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0")
	l.macA, l.macB = mac(t, l.a), mac(t, l.b)
	return l
}

func nsRun(ns, stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mac(t *testing.T, ns string) string {
	t.Helper()
	var hw string
	err := nfttest.InNS(ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		hw = l.Attrs().HardwareAddr.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// echoServer answers every line on port 8080 of ns with "<name> <line>".
func echoServer(t *testing.T, ns, name string) {
	t.Helper()
	var ln net.Listener
	if err := nfttest.InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewScanner(c)
				for r.Scan() {
					fmt.Fprintf(c, "%s %s\n", name, r.Text())
				}
			}()
		}
	}()
}

// pointVIP makes the client's neighbour entry for the VIP mac (the
// gratuitous ARP of a new owner).
func (l *lan) pointVIP(t *testing.T, mac string) {
	t.Helper()
	nfttest.Run(t, "ip", "-n", l.client, "neigh", "replace", lanVIP.String(), "lladdr", mac, "dev", "eth0", "nud", "permanent")
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

func (l *lan) dial(t *testing.T) *conn {
	t.Helper()
	var c net.Conn
	if err := nfttest.InNS(l.client, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(lanVIP, 80).String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}
}

// ask sends line and returns the answer.
func (c *conn) ask(line string) (string, error) {
	c.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c.c, line); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	return strings.TrimSpace(s), err
}

func mustAsk(t *testing.T, c *conn, line, want string) {
	t.Helper()
	got, err := c.ask(line)
	if err != nil || got != want {
		t.Fatalf("ask %q: got %q, %v; want %q", line, got, err, want)
	}
}

// TestForwardToOldOwner: connections established through A keep working
// once the client sends to B, which forwards them to A, both when B's
// conntrack picks them up mid-stream and when it refuses them (loose
// pickup off); new connections are B's; A counts its open connections
// and stops counting closed ones; the end of the drain removes B's rules,
// routes and marked conntrack entries.
func TestForwardToOldOwner(t *testing.T) {
	nfttest.NeedRoot(t)
	l := newLAN(t)
	l.pointVIP(t, l.macA)
	c1 := l.dial(t)
	mustAsk(t, c1, "one", "A one")

	// B takes the VIP over, draining from A (the table and routes first,
	// then the client's neighbour entry, as the agent's gate does).
	st := State{
		Drains: map[netip.Addr]Drain{lanVIP: {VIP: lanVIP, From: "a", Via: lanA, Since: t0, Until: t0.Add(time.Minute)}},
		Slots:  map[string]uint32{"a": 7},
	}
	tab := nsApplier(t, l.b)
	if err := tab.Apply(nft.Merge(nft.Model{Family: firewall.TableFamily, Table: firewall.TableName}, Fragment(st))); err != nil {
		t.Fatalf("apply the drain fragment in B: %v", err)
	}
	hb := nsHandle(t, l.b)
	router, ct := NewRouter(hb), NewConntrack(hb)
	if err := router.Set(Routes(st), true); err != nil {
		t.Fatalf("routes in B: %v", err)
	}
	if err := router.Set(Routes(st), true); err != nil {
		t.Fatalf("routes in B again: %v", err)
	}
	rules := nfttest.Run(t, "ip", "-n", l.b, "rule", "show")
	if !strings.Contains(rules, fmt.Sprintf("%d:\tfrom all fwmark 0x70000/0xff0000 lookup %d", RulePriority, TableBase+7)) {
		t.Errorf("ip rules of B lack the drain's:\n%s", rules)
	}
	l.pointVIP(t, l.macB)
	for i := range 5 {
		mustAsk(t, c1, fmt.Sprint("moved ", i), fmt.Sprint("A moved ", i))
	}
	// A new connection is B's.
	c2 := l.dial(t)
	mustAsk(t, c2, "new", "B new")
	ctList := nfttest.Run(t, "ip", "netns", "exec", l.b, "conntrack", "-L", "-d", lanVIP.String(), "-m", fmt.Sprintf("%#x/%#x", Mark(7), MarkMask))
	if !strings.Contains(ctList, "dport=80") {
		t.Errorf("B has no marked conntrack entry of the forwarded connection:\n%s", ctList)
	}

	// With loose pickup off, B's conntrack refuses the mid-stream packets:
	// they are forwarded all the same.
	l.pointVIP(t, l.macA)
	c3 := l.dial(t)
	mustAsk(t, c3, "three", "A three")
	nfttest.Run(t, "ip", "netns", "exec", l.b, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
	l.pointVIP(t, l.macB)
	for i := range 3 {
		mustAsk(t, c3, fmt.Sprint("strict ", i), fmt.Sprint("A strict ", i))
	}
	mustAsk(t, c1, "still", "A still")

	// A counts the two connections it still serves, not B's.
	ca := NewConntrack(nsHandle(t, l.a))
	if n, err := ca.Open([]netip.Addr{lanVIP}); err != nil || n != 2 {
		t.Errorf("A's open connections to the VIP: %d, %v; want 2", n, err)
	}
	c1.c.Close()
	c3.c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := ca.Open([]netip.Addr{lanVIP})
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A still counts %d open connections (%v) after the client closed them:\n%s", n, err,
				nfttest.Run(t, "ip", "netns", "exec", l.a, "conntrack", "-L"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The drain ends: rules, routes and marked entries go.
	if err := tab.Apply(nft.Model{Family: firewall.TableFamily, Table: firewall.TableName}); err != nil {
		t.Fatal(err)
	}
	if err := router.Set(nil, true); err != nil {
		t.Fatalf("remove routes in B: %v", err)
	}
	if _, err := ct.Flush([]uint32{7}); err != nil {
		t.Fatal(err)
	}
	if rules := nfttest.Run(t, "ip", "-n", l.b, "rule", "show"); strings.Contains(rules, "fwmark") {
		t.Errorf("a drain's ip rule is left in B:\n%s", rules)
	}
	if routes := nfttest.Run(t, "ip", "-n", l.b, "route", "show", "table", "all"); strings.Contains(routes, fmt.Sprint("table ", TableBase+7)) {
		t.Errorf("a drain's route is left in B:\n%s", routes)
	}
	if out, _ := nsRun(l.b, "", "conntrack", "-L", "-m", fmt.Sprintf("%#x/%#x", Mark(7), MarkMask)); strings.Contains(out, "dport=80") {
		t.Errorf("marked conntrack entries left in B after the flush:\n%s", out)
	}
	mustAsk(t, c2, "after", "B after")
}

// nsHandle is a netlink handle inside ns, closed at the end of the test.
func nsHandle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nh.Close)
	return nh
}
