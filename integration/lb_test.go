package integration

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/node/demo"
)

// lbEnv is a cluster of three nodes with two pods each, a server in every
// pod, an address pool and the LoadBalancer service "web" (TCP and UDP port
// 80, every pod), and a client on the nodes' L2 segment.
type lbEnv struct {
	*tc
	c1   *client
	macs map[string]string // node -> eth0 MAC
	web  svcView
}

// newLBEnv builds the environment. Pods of node2 and node3 get the label
// zone=b.
func newLBEnv(t *testing.T) *lbEnv {
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 2, ExtraAgentArgs: lbTimers})
	x.start()
	pods := x.c.Pods()
	x.startServers(pods)
	e := &lbEnv{tc: x, macs: x.nodeMACs()}
	e.c1 = x.addClient("c1", client1Addr)

	extra := map[string]map[string]string{}
	for _, p := range pods {
		if p.Node != "node1" {
			extra[p.Name] = map[string]string{"zone": "b"}
		}
	}
	x.mustApply(x.node(1), poolManifest("lan", true, lbPool)+podsManifest(pods, extra)+
		svcManifest(svcSpec{name: "web", udp: true}))
	e.web = x.settled("web", true)
	if e.web.vip != lbPoolFirst {
		t.Errorf("service web got VIP %s, want the pool's first address %s", e.web.vip, lbPoolFirst)
	}
	t.Logf("service web: VIP %s, clusterIP %s, announced by %s", e.web.vip, e.web.clusterIP, e.web.owner)
	// Endpoints follow the Pod objects: wait until every node's pods answer.
	e.waitAnswers(netip.AddrPortFrom(e.web.vip, 80), 3)
	return e
}

// waitAnswers waits until connections from the client to addr are answered
// by pods of want distinct nodes.
func (e *lbEnv) waitAnswers(addr netip.AddrPort, want int) {
	e.t.Helper()
	seen := map[string]bool{}
	eventually(e.t, 30*time.Second, fmt.Sprintf("pods of %d nodes answer on %s", want, addr), func() error {
		s, err := askTCP(e.c1.ns, addr, time.Second)
		if err != nil {
			return err
		}
		a, err := parseAnswer(s)
		if err != nil {
			return err
		}
		seen[a.node()] = true
		if len(seen) < want {
			return fmt.Errorf("answers so far from %d nodes: %v", len(seen), seen)
		}
		return nil
	})
}

// gateway is the pod gateway (first address of the subnet) of node name.
func (e *lbEnv) gateway(name string) netip.Addr {
	e.t.Helper()
	st := e.status(e.c.Node(name))
	return ipam.Gateway(netip.MustParsePrefix(st.Node.Subnet))
}

// TestLBService checks LoadBalancer and ClusterIP services on one cluster
// of three nodes and two clients on their L2 segment: TCP and UDP through
// the VIP, ARP answered by the owner alone, source ranges, ClusterIP from a
// pod, externalTrafficPolicy Local, requested addresses, a full pool,
// rejected manifests, services applied at the same moment on two nodes, and
// the same VIP given out on both sides of a partition.
func TestLBService(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "arping", "conntrack")
	e := newLBEnv(t)
	c2 := e.addClient("c2", client2Addr)

	t.Run("TCPAndUDP", func(t *testing.T) { e.with(t).testVIPTraffic(t) })
	t.Run("ARPOwner", func(t *testing.T) { e.with(t).testARPOwner(t, c2) })
	t.Run("RequestedIP", func(t *testing.T) { e.with(t).testRequestedIP(t) })
	t.Run("SourceRanges", func(t *testing.T) { e.with(t).testSourceRanges(t, c2) })
	t.Run("ClusterIPFromPod", func(t *testing.T) { e.with(t).testClusterIP(t) })
	t.Run("LocalPolicy", func(t *testing.T) { e.with(t).testLocal(t) })
	t.Run("FullPool", func(t *testing.T) { e.with(t).testFullPool(t) })
	t.Run("InvalidInput", func(t *testing.T) { e.with(t).testInvalid(t) })
	t.Run("ConcurrentApply", func(t *testing.T) { e.with(t).testConcurrent(t) })
	t.Run("PartitionConflict", func(t *testing.T) { e.with(t).testPartition(t, c2) })
}

func (e *lbEnv) with(t *testing.T) *lbEnv {
	c := *e
	c.tc = e.tc.with(t)
	return &c
}

// testVIPTraffic: TCP and UDP to VIP:80 are answered by pods of several
// nodes; answers from the owner's pods see the client's address, the
// others the owner's pod gateway (Cluster policy: the reply must come back
// through the owner).
func (e *lbEnv) testVIPTraffic(t *testing.T) {
	vip := netip.AddrPortFrom(e.web.vip, 80)
	gw := e.gateway(e.web.owner)
	for _, udp := range []bool{false, true} {
		proto := "TCP"
		if udp {
			proto = "UDP"
		}
		answers, errs := spread(e.c1.ns, vip, udp, 30)
		for _, err := range errs {
			t.Errorf("%s to %s: %v", proto, vip, err)
		}
		nodes := nodesOf(answers)
		t.Logf("%s to %s: %d answers from nodes %v", proto, vip, len(answers), nodes)
		if len(nodes) < 2 {
			t.Errorf("%s to %s: answers only from nodes %v, want pods of several nodes", proto, vip, nodes)
		}
		for _, a := range answers {
			want := gw
			if a.node() == e.web.owner {
				want = client1Addr
			}
			if a.peer != want {
				t.Errorf("%s to %s: pod %s saw the connection from %s, want %s (owner %s)", proto, vip, a.pod, a.peer, want, e.web.owner)
			}
		}
	}
}

// testARPOwner: arping from each client gets exactly one MAC, the owner's,
// and the client's neighbour entry holds it.
func (e *lbEnv) testARPOwner(t *testing.T, c2 *client) {
	want := e.macs[e.web.owner]
	for _, c := range []*client{e.c1, c2} {
		macs, out := arping(c, e.web.vip, 3)
		if !slices.Equal(macs, []string{want}) {
			t.Errorf("arping %s from %s: answered by %v, want only %s (%s's eth0); arping said:\n%s", e.web.vip, c.ns, macs, want, e.web.owner, out)
		}
	}
	if mac, state, err := neighMAC(e.c1, e.web.vip); err != nil || mac != want {
		t.Errorf("client neighbour entry for %s: %q (%s) %v, want %s", e.web.vip, mac, state, err, want)
	}
}

// testRequestedIP: a requested loadBalancerIP inside the pool is honoured
// and answered.
func (e *lbEnv) testRequestedIP(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(2), svcManifest(svcSpec{name: "fixed", lbIP: lbPoolLast.String()}))
	v := x.settled("fixed", true)
	if v.vip != lbPoolLast {
		t.Fatalf("service fixed asked for %s and got %s", lbPoolLast, v.vip)
	}
	if _, err := askTCP(e.c1.ns, netip.AddrPortFrom(v.vip, 80), 2*time.Second); err != nil {
		t.Errorf("requested VIP: %v", err)
	}
	if macs, out := arping(e.c1, v.vip, 2); !slices.Equal(macs, []string{e.macs[v.owner]}) {
		t.Errorf("arping %s: answered by %v, want only %s's %s:\n%s", v.vip, macs, v.owner, e.macs[v.owner], out)
	}
}

// testSourceRanges: loadBalancerSourceRanges admits client 1 and drops
// client 2, which still reaches a service without ranges.
func (e *lbEnv) testSourceRanges(t *testing.T, c2 *client) {
	x := e.tc
	x.mustApply(x.node(1), svcManifest(svcSpec{name: "ranged", udp: true, ranges: []string{netip.PrefixFrom(client1Addr, 32).String()}}))
	v := x.settled("ranged", true)
	addr := netip.AddrPortFrom(v.vip, 80)
	eventually(t, 10*time.Second, "client 1 reaches the ranged service", func() error {
		_, err := askTCP(e.c1.ns, addr, time.Second)
		return err
	})
	for _, udp := range []bool{false, true} {
		if _, errs := spread(e.c1.ns, addr, udp, 5); len(errs) > 0 {
			t.Errorf("client 1 (inside the source range) to %s (udp %t): %v", addr, udp, errors.Join(errs...))
		}
		answers, _ := spread(c2.ns, addr, udp, 3)
		if len(answers) > 0 {
			t.Errorf("client 2 (%s, outside the source range) got answers from %s (udp %t): %v", client2Addr, addr, udp, answers)
		}
	}
	if _, err := askTCP(c2.ns, netip.AddrPortFrom(e.web.vip, 80), 2*time.Second); err != nil {
		t.Errorf("client 2 to service web (no source ranges): %v", err)
	}
}

// testClusterIP: pods reach a ClusterIP service (and a LoadBalancer
// service's ClusterIP) and are answered by pods of several nodes, which see
// the client pod's own address.
func (e *lbEnv) testClusterIP(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(3), svcManifest(svcSpec{name: "inner", typ: "ClusterIP", port: 8088, udp: true}))
	v := x.settled("inner", false)
	if v.vip.IsValid() {
		t.Errorf("ClusterIP service inner has an external IP %s", v.vip)
	}
	for _, c := range []struct {
		from *demo.Pod
		addr netip.AddrPort
	}{
		{x.pod(1, 1), netip.AddrPortFrom(v.clusterIP, 8088)},
		{x.pod(3, 2), netip.AddrPortFrom(e.web.clusterIP, 80)},
	} {
		eventually(t, 10*time.Second, c.from.Name+" reaches "+c.addr.String(), func() error {
			_, err := askTCP(c.from.NS, c.addr, time.Second)
			return err
		})
		for _, udp := range []bool{false, true} {
			answers, errs := spread(c.from.NS, c.addr, udp, 20)
			for _, err := range errs {
				t.Errorf("pod %s to %s (udp %t): %v", c.from.Name, c.addr, udp, err)
			}
			nodes := nodesOf(answers)
			t.Logf("pod %s to %s (udp %t): %d answers from nodes %v", c.from.Name, c.addr, udp, len(answers), nodes)
			if len(nodes) < 2 {
				t.Errorf("pod %s to %s (udp %t): answers only from nodes %v, want several", c.from.Name, c.addr, udp, nodes)
			}
			for _, a := range answers {
				if a.pod != c.from.Name && a.peer != c.from.IP {
					t.Errorf("pod %s to %s: %s saw the connection from %s, want the pod's address %s", c.from.Name, c.addr, a.pod, a.peer, c.from.IP)
				}
			}
		}
	}
}

// testLocal: with externalTrafficPolicy Local the VIP is announced by a
// node with a ready endpoint, only that node's pods answer, and they see
// the client's own address.
func (e *lbEnv) testLocal(t *testing.T) {
	x := e.tc
	x.mustApply(x.node(1), svcManifest(svcSpec{name: "local", udp: true, local: true, selector: map[string]string{"zone": "b"}}))
	v := x.settled("local", true)
	if v.owner != "node2" && v.owner != "node3" {
		t.Fatalf("service local (endpoints on node2 and node3 only) is announced by %s", v.owner)
	}
	addr := netip.AddrPortFrom(v.vip, 80)
	eventually(t, 10*time.Second, "client reaches the Local service", func() error {
		_, err := askTCP(e.c1.ns, addr, time.Second)
		return err
	})
	for _, udp := range []bool{false, true} {
		answers, errs := spread(e.c1.ns, addr, udp, 20)
		for _, err := range errs {
			t.Errorf("Local service %s (udp %t): %v", addr, udp, err)
		}
		for _, a := range answers {
			if a.node() != v.owner {
				t.Errorf("Local service %s announced by %s: answered by %s", addr, v.owner, a.pod)
			}
			if a.peer != client1Addr {
				t.Errorf("Local service %s: %s saw the connection from %s, want the client's %s", addr, a.pod, a.peer, client1Addr)
			}
		}
		t.Logf("Local service %s (udp %t), owner %s: %d answers from %v", addr, udp, v.owner, len(answers), nodesOf(answers))
	}
}

// testFullPool: a service of a full pool is pending with the reason, on
// every node; it gets the address once the pool has room again.
func (e *lbEnv) testFullPool(t *testing.T) {
	x := e.tc
	const addr = "10.77.0.220"
	x.mustApply(x.node(1), poolManifest("tiny", false, addr+"/32")+svcManifest(svcSpec{name: "tiny-a", pool: "tiny"}))
	if v := x.settled("tiny-a", true); v.vip.String() != addr {
		t.Fatalf("tiny-a got %s, want %s", v.vip, addr)
	}
	x.mustApply(x.node(2), svcManifest(svcSpec{name: "tiny-b", pool: "tiny"}))
	for _, n := range x.c.Nodes {
		eventually(t, 20*time.Second, n.Name+" shows tiny-b pending", func() error {
			svcs, err := x.services(n)
			if err != nil {
				return err
			}
			v := svcs["tiny-b"]
			if v.vip.IsValid() || !strings.Contains(v.pending, "full") || !strings.Contains(v.pending, "tiny") {
				return fmt.Errorf("tiny-b on %s: VIP %v, pending %q; want no VIP and a reason naming the full pool tiny", n.Name, v.vip, v.pending)
			}
			return nil
		})
		r := x.cli(n, nil, "get", "services")
		var row string
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Contains(l, "tiny-b") {
				row = l
			}
		}
		if r.err != nil || !strings.Contains(row, "<pending>") || !strings.Contains(row, "full") {
			t.Errorf("get services on %s: row of tiny-b %q, want <pending> and the reason (%v)", n.Name, row, r)
		}
		st := x.status(n)
		if v, ok := vipOf(st, "default/tiny-b"); ok {
			t.Errorf("status on %s lists a VIP for the pending tiny-b: %+v", n.Name, v)
		}
		if is, ok := issueOf(st, "default/tiny-b"); !ok || !strings.Contains(is.Pending, "full") {
			t.Errorf("status on %s: serviceIssues %+v, want default/tiny-b pending with the reason", n.Name, st.ServiceIssues)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("get services on node3:\n%s", x.cli(x.node(3), nil, "get", "services").stdout)
	// Room again: tiny-b takes the address.
	x.mustDelete(x.node(3), svcManifest(svcSpec{name: "tiny-a", pool: "tiny"}))
	if v := x.settled("tiny-b", true); v.vip.String() != addr || v.pending != "" {
		t.Errorf("after tiny-a was deleted tiny-b has %s (pending %q), want %s", v.vip, v.pending, addr)
	}
}

// testInvalid: manifests with a requested VIP outside every pool or in
// use, or a pool overlapping another pool or the cluster CIDR, are
// rejected with one line naming the document and field; nothing of them
// is stored anywhere.
func (e *lbEnv) testInvalid(t *testing.T) {
	x := e.tc
	nsDoc := func(name string) string {
		return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n"
	}
	var namespaces []string
	cases := []struct {
		name, manifest string
		want           []string // substrings of the error line
	}{
		{"VIP outside every pool", svcManifest(svcSpec{name: "outside", lbIP: "10.77.0.250"}),
			[]string{"document 2", "Service default/outside", "spec.loadBalancerIP", "10.77.0.250"}},
		{"VIP in use", svcManifest(svcSpec{name: "taken", lbIP: lbPoolLast.String()}),
			[]string{"document 2", "spec.loadBalancerIP", lbPoolLast.String(), "fixed"}},
		{"pools overlap", "---\n" + poolManifest("overlap", true, "10.77.0.205-10.77.0.215"),
			[]string{"document 2", "overlap", "lan"}},
		{"pool overlaps the cluster CIDR", "---\n" + poolManifest("podnet", true, "10.244.250.0/28"),
			[]string{"document 2", "podnet", "10.244.0.0/16"}},
	}
	for i, c := range cases {
		ns := fmt.Sprintf("inv%d-%s", i, randHex(2))
		namespaces = append(namespaces, ns)
		r := x.applyYAML(x.node(1+i%3), nsDoc(ns)+c.manifest)
		t.Logf("%s: exit %d, stderr %q", c.name, r.exitCode(), r.stderr)
		if r.exitCode() <= 0 {
			t.Errorf("%s: apply exited %d, want non-zero; stdout %q", c.name, r.exitCode(), r.stdout)
		}
		line := strings.TrimSpace(r.stderr)
		if strings.Contains(line, "\n") || line == "" {
			t.Errorf("%s: apply printed %q, want one line", c.name, r.stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: error %q does not name %q", c.name, line, w)
			}
		}
		if strings.TrimSpace(r.stdout) != "" {
			t.Errorf("%s: apply printed results %q", c.name, r.stdout)
		}
	}
	// A good object applied afterwards and seen everywhere shows that
	// gossip had its chance to carry the rejected ones, had any been stored.
	sentinel := "sentinel-" + randHex(3)
	x.mustApply(x.node(1), nsDoc(sentinel))
	for _, n := range x.c.Nodes {
		eventually(t, 20*time.Second, "sentinel on "+n.Name, func() error {
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
		for _, ns := range namespaces {
			if find(nss, "", ns) != nil {
				t.Errorf("%s stores namespace %s of a rejected manifest", n.Name, ns)
			}
		}
		svcs, err := x.services(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"outside", "taken"} {
			if _, ok := svcs[s]; ok {
				t.Errorf("%s stores service %s of a rejected manifest", n.Name, s)
			}
		}
		pools, err := x.getList(n, "addresspools")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"overlap", "podnet"} {
			if find(pools, "", p) != nil {
				t.Errorf("%s stores address pool %s of a rejected manifest", n.Name, p)
			}
		}
	}
}

// testConcurrent: pairs of services applied at the same moment on node1
// and node3 (each node allocates before it hears of the other's) end with
// distinct VIPs, the same on every node, each answered.
func (e *lbEnv) testConcurrent(t *testing.T) {
	x := e.tc
	var names []string
	for i := range 2 {
		a, b := fmt.Sprintf("race%d-a", i), fmt.Sprintf("race%d-b", i)
		names = append(names, a, b)
		var wg sync.WaitGroup
		start := make(chan struct{})
		res := make([]result, 2)
		for j, c := range []struct {
			n    *demo.Node
			name string
		}{{x.node(1), a}, {x.node(3), b}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res[j] = x.cli(c.n, []byte(svcManifest(svcSpec{name: c.name})), "apply", "-f", "-")
			}()
		}
		close(start)
		wg.Wait()
		for j, r := range res {
			if r.err != nil {
				t.Fatalf("concurrent apply %d: %v", j, r)
			}
		}
	}
	vips := map[netip.Addr]string{}
	for _, name := range names {
		v := x.settled(name, true)
		if o, dup := vips[v.vip]; dup {
			t.Errorf("services %s and %s both hold VIP %s", o, name, v.vip)
		}
		vips[v.vip] = name
		if _, err := askTCP(e.c1.ns, netip.AddrPortFrom(v.vip, 80), 2*time.Second); err != nil {
			t.Errorf("service %s at %s: %v", name, v.vip, err)
		}
	}
	// The settled views must stay: no flapping after the assignments were
	// written.
	time.Sleep(time.Second)
	for _, name := range names {
		if v := x.settled(name, true); vips[v.vip] != name {
			t.Errorf("service %s moved to %s after it settled", name, v.vip)
		}
	}
	t.Logf("concurrent services: %v; conflict events on node1: %q", vips, x.eventsWith(x.node(1), "vip-conflict"))
}

// testPartition: node1 is cut off the segment; meanwhile a service is
// applied on each side, and each side gives its service the same free VIP.
// After the heal the older service keeps it everywhere, the younger gets
// another one, the conflict is reported, and every VIP is answered by
// exactly one node, the one the clients' ARP caches hold.
func (e *lbEnv) testPartition(t *testing.T, c2 *client) {
	x := e.tc
	n1, n3 := x.node(1), x.node(3)
	cut := func(state string) {
		if r := inNS(x.c.Switch, nil, nil, "ip", "link", "set", n1.Name, state); r.err != nil {
			t.Errorf("set %s's switch port %s: %v", n1.Name, state, r)
		}
	}
	cut("down")
	healed := false
	heal := func() {
		if !healed {
			healed = true
			cut("up")
		}
	}
	t.Cleanup(heal)
	t.Logf("%s cut off the segment", n1.Name)
	x.mustApply(n1, svcManifest(svcSpec{name: "split-a"}))
	time.Sleep(200 * time.Millisecond) // split-a is the older
	x.mustApply(n3, svcManifest(svcSpec{name: "split-b"}))
	views := map[string]svcView{}
	for _, c := range []struct {
		n    *demo.Node
		name string
	}{{n1, "split-a"}, {n3, "split-b"}} {
		eventually(t, 20*time.Second, c.n.Name+" gives "+c.name+" a VIP", func() error {
			svcs, err := x.services(c.n)
			if err != nil {
				return err
			}
			v := svcs[c.name]
			if !v.vip.IsValid() || v.owner == "" {
				return fmt.Errorf("%s: %s has VIP %v announced by %q", c.n.Name, c.name, v.vip, v.owner)
			}
			views[c.name] = v
			return nil
		})
	}
	t.Logf("during the partition: split-a %s (by %s, on %s's side), split-b %s (by %s, on %s's side)",
		views["split-a"].vip, views["split-a"].owner, n1.Name, views["split-b"].vip, views["split-b"].owner, n3.Name)
	if views["split-a"].vip != views["split-b"].vip {
		t.Logf("the two sides gave different VIPs: no conflict to resolve (want the same free VIP on both sides)")
	}
	// Each side has recorded its service's address before the heal.
	for _, c := range []struct {
		n    *demo.Node
		name string
	}{{n1, "split-a"}, {n3, "split-b"}} {
		eventually(t, 20*time.Second, c.n.Name+" records the VIP of "+c.name, func() error {
			st, err := x.c.Status(t.Context(), c.n)
			if err != nil {
				return err
			}
			if v, ok := vipOf(st, "default/"+c.name); !ok || !v.Recorded {
				return fmt.Errorf("status vips has %+v", v)
			}
			return nil
		})
	}
	heal()
	x.waitReady()
	a := x.settled("split-a", true)
	b := x.settled("split-b", true)
	t.Logf("after the heal: split-a %s by %s, split-b %s by %s", a.vip, a.owner, b.vip, b.owner)
	if a.vip == b.vip {
		t.Fatalf("split-a and split-b both hold %s after the heal", a.vip)
	}
	if views["split-a"].vip == views["split-b"].vip {
		if a.vip != views["split-a"].vip {
			t.Errorf("the older service split-a lost its VIP %s (now %s)", views["split-a"].vip, a.vip)
		}
		var reported []string
		for _, n := range x.c.Nodes {
			reported = append(reported, x.eventsWith(n, "split-b")...)
		}
		conflict := slices.ContainsFunc(reported, func(l string) bool { return strings.Contains(l, "vip-conflict") })
		if !conflict {
			t.Errorf("no node reported the conflict of split-b (events naming it: %q)", reported)
		}
		// Status and get services keep saying so after the conflict is
		// resolved, on the nodes that saw it.
		inStatus := false
		for _, n := range x.c.Nodes {
			if is, ok := issueOf(x.status(n), "default/split-b"); ok && strings.Contains(is.Conflict, views["split-b"].vip.String()) {
				inStatus = true
				row := ""
				for _, l := range strings.Split(x.cli(n, nil, "get", "services").stdout, "\n") {
					if strings.Contains(l, "split-b") {
						row = l
					}
				}
				if !strings.Contains(row, "conflict: ") {
					t.Errorf("get services on %s: row of split-b %q, want the conflict", n.Name, row)
				}
			}
		}
		if !inStatus {
			t.Errorf("no node's status lists the conflict of split-b over %s", views["split-b"].vip)
		}
	}
	// Every VIP is answered by its owner alone, and the clients follow once
	// the announcements after the heal are over (a burst lasts 4 s).
	time.Sleep(5 * time.Second)
	svcs, err := x.services(n3)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range svcs {
		if !v.vip.IsValid() {
			continue
		}
		want := e.macs[v.owner]
		for _, c := range []*client{e.c1, c2} {
			macs, out := arping(c, v.vip, 1)
			if !slices.Equal(macs, []string{want}) {
				t.Errorf("after the heal arping %s (%s) from %s: answered by %v, want only %s (%s):\n%s", v.vip, name, c.ns, macs, want, v.owner, out)
			}
		}
		mac, _, err := neighMAC(e.c1, v.vip)
		if err == nil && mac != "" && mac != want {
			// Learned during the partition: the gratuitous ARP after the heal
			// must have corrected it, without a flush.
			t.Errorf("after the heal client 1's neighbour entry for %s (%s) is %s, want %s (%s)", v.vip, name, mac, want, v.owner)
		}
	}
}

// TestLBFailover: SIGKILL of the VIP's owner moves the VIP to another node,
// whose gratuitous ARP updates the client's neighbour entry without a
// flush, and new connections go through it; the killed agent rejoins; then
// a graceful leave of the owner hands the VIP over with no failed
// connection.
func TestLBFailover(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "arping", "conntrack")
	e := newLBEnv(t)
	steps := []struct {
		name string
		f    func(*lbEnv, *testing.T)
	}{
		{"KillOwner", (*lbEnv).testKillOwner},
		{"RestartOther", (*lbEnv).testRestartOther},
		{"LeaveOwner", (*lbEnv).testLeaveOwner},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.f(e.with(t), t) })
		// Each step must leave three ready nodes behind for the next.
		if i < len(steps)-1 && !e.ready() {
			return
		}
	}
}

// ready waits until the cluster is whole again and every node agrees on
// service web (the subtest "Resettle"), and updates e.web.
func (e *lbEnv) ready() bool {
	if err := e.c.WaitReady(e.t.Context(), 30*time.Second); err != nil {
		e.t.Errorf("cluster not ready after the step: %v", err)
		return false
	}
	return e.t.Run("Resettle", func(t *testing.T) {
		x := e.with(t)
		e.web = x.settled("web", true)
		// The next step starts from a cluster that serves every connection
		// (after a rejoin this can take a while, see KillOwner).
		vip := netip.AddrPortFrom(e.web.vip, 80)
		eventually(t, 45*time.Second, "12 connections in a row to "+vip.String()+" succeed", func() error {
			for range 12 {
				if _, err := askTCP(e.c1.ns, vip, time.Second); err != nil {
					return fmt.Errorf("%w (WireGuard handshakes: %s)", err, x.handshakes())
				}
			}
			return nil
		})
	})
}

func (e *lbEnv) others(name string) []*demo.Node {
	var out []*demo.Node
	for _, n := range e.c.Nodes {
		if n.Name != name {
			out = append(out, n)
		}
	}
	return out
}

// movedFrom accepts a view of a service that kept vip and is announced by
// another node than from.
func movedFrom(from string, vip netip.Addr) func(svcView) error {
	return func(v svcView) error {
		if v.owner == from || v.vip != vip {
			return fmt.Errorf("service at %s announced by %s, want %s announced by a node other than %s", v.vip, v.owner, vip, from)
		}
		return nil
	}
}

func (e *lbEnv) testKillOwner(t *testing.T) {
	x := e.tc
	vip := netip.AddrPortFrom(e.web.vip, 80)
	old := x.c.Node(e.web.owner)
	if _, err := askTCP(e.c1.ns, vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if mac, _, _ := neighMAC(e.c1, e.web.vip); mac != e.macs[old.Name] {
		t.Fatalf("client's neighbour entry for %s is %q before the kill, want %s's %s", e.web.vip, mac, old.Name, e.macs[old.Name])
	}
	if err := x.c.StopAgent(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("SIGKILL to %s's agent (the VIP's owner)", old.Name)

	v := x.settledWhere("web", true, movedFrom(old.Name, e.web.vip), e.others(old.Name)...)
	newMAC := e.macs[v.owner]
	eventually(t, 20*time.Second, "the client's neighbour entry follows the VIP to "+v.owner, func() error {
		mac, state, err := neighMAC(e.c1, e.web.vip)
		if err != nil {
			return err
		}
		if mac != newMAC {
			return fmt.Errorf("neighbour %s is %q (%s), want %s (%s)", e.web.vip, mac, state, newMAC, v.owner)
		}
		return nil
	})
	t.Logf("VIP %s moved from %s to %s; the client's ARP cache had the new MAC %s after the kill", e.web.vip, old.Name, v.owner, time.Since(killed).Round(10*time.Millisecond))

	// New connections succeed, through the new owner (its conntrack has
	// them), answered by the pods of the nodes that are alive.
	answers, errs := spread(e.c1.ns, vip, false, 30)
	for _, err := range errs {
		t.Errorf("new connection to %s after the failover: %v", vip, err)
	}
	t.Logf("after the failover: %d of 30 connections answered, by nodes %v", len(answers), nodesOf(answers))
	for _, a := range answers {
		if a.node() == old.Name {
			t.Errorf("after the failover pod %s of the dead node %s answered", a.pod, old.Name)
		}
	}
	r := inNS(x.c.Node(v.owner).NS, nil, nil, "conntrack", "-L", "-p", "tcp", "-s", client1Addr.String(), "-d", e.web.vip.String())
	if n := strings.Count(strings.TrimSpace(r.stdout), "\n") + 1; r.err != nil || strings.TrimSpace(r.stdout) == "" {
		t.Errorf("the new owner %s has no conntrack entry of the client's connections to %s: %v", v.owner, e.web.vip, r)
	} else {
		t.Logf("new owner %s tracked %d connections of the client to %s", v.owner, n, e.web.vip)
	}

	// The killed agent comes back: the cluster settles on one owner again,
	// the only one that answers ARP, and the client follows it.
	if err := x.c.StartAgent(old); err != nil {
		t.Fatal(err)
	}
	x.waitReady()
	e.web = x.settled("web", true)
	want := e.macs[e.web.owner]
	eventually(t, 20*time.Second, "the client's neighbour entry follows the VIP to "+e.web.owner, func() error {
		mac, state, err := neighMAC(e.c1, e.web.vip)
		if err != nil {
			return err
		}
		if mac != want {
			return fmt.Errorf("neighbour %s is %q (%s), want %s (%s)", e.web.vip, mac, state, want, e.web.owner)
		}
		return nil
	})
	if macs, out := arping(e.c1, e.web.vip, 2); !slices.Equal(macs, []string{want}) {
		t.Errorf("after %s rejoined arping %s is answered by %v, want only %s (%s):\n%s", old.Name, e.web.vip, macs, want, e.web.owner, out)
	}
	// Once the cluster is ready again every connection succeeds, also those
	// the rejoined node forwards to pods of the others.
	var failed []string
	seen := map[string]bool{}
	for i := 0; i < 30 && len(failed) < 5; i++ {
		s, err := askTCP(e.c1.ns, vip, time.Second)
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		if a, err := parseAnswer(s); err == nil {
			seen[a.node()] = true
		}
	}
	if len(failed) > 0 {
		t.Errorf("after %s rejoined and the cluster was ready, connections to %s (announced by %s) failed:\n%s\nWireGuard handshakes: %s",
			old.Name, vip, e.web.owner, strings.Join(failed, "\n"), e.handshakes())
	}
	t.Logf("after %s rejoined: answers from nodes %v", old.Name, slices.Sorted(maps.Keys(seen)))
}

// handshakes summarises every node's latest WireGuard handshakes.
func (e *lbEnv) handshakes() string {
	keys := map[string]string{}
	for _, n := range e.c.Nodes {
		if r := inNS(n.NS, nil, nil, "wg", "show", n.WGIface, "public-key"); r.err == nil {
			keys[strings.TrimSpace(r.stdout)] = n.Name
		}
	}
	var parts []string
	for _, n := range e.c.Nodes {
		r := inNS(n.NS, nil, nil, "wg", "show", n.WGIface, "latest-handshakes")
		var peers []string
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if f := strings.Fields(l); len(f) == 2 {
				ago := "never"
				if sec, _ := strconv.ParseInt(f[1], 10, 64); sec > 0 {
					ago = time.Since(time.Unix(sec, 0)).Round(time.Second).String() + " ago"
				}
				peers = append(peers, keys[f[0]]+" "+ago)
			}
		}
		parts = append(parts, n.Name+": "+strings.Join(peers, ", "))
	}
	return strings.Join(parts, "; ")
}

// testRestartOther: an agent that does not own the VIP restarts while it
// cannot reach the others' gossip port for a few seconds (a network that
// comes up late, a busy peer). Before it has heard the cluster it must not
// announce any VIP (alone, it would rank itself first for all of them), so
// the client's neighbour entry keeps the owner's MAC throughout.
func (e *lbEnv) testRestartOther(t *testing.T) {
	x := e.tc
	owner := e.web.owner
	other := e.others(owner)[0]
	vip := e.web.vip
	eventually(t, 10*time.Second, "the client connects to the VIP", func() error {
		_, err := askTCP(e.c1.ns, netip.AddrPortFrom(vip, 80), time.Second)
		return err
	})
	w := watchARP(t, e.c1)
	var mu sync.Mutex
	var wrong []string
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if mac, state, err := neighMAC(e.c1, vip); err == nil && mac != "" && mac != e.macs[owner] {
				mu.Lock()
				wrong = append(wrong, fmt.Sprintf("%s %s (%s)", time.Now().Format("15:04:05.000"), mac, state))
				mu.Unlock()
			}
		}
	}()
	if err := x.c.StopAgent(other, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	unblock := x.blockGossip(other)
	t.Logf("restarting %s (VIP %s is %s's) with its gossip port blocked for 3s", other.Name, vip, owner)
	if err := x.c.StartAgent(other); err != nil {
		unblock()
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	unblock()
	x.waitReady()
	v := x.settled("web", true)
	time.Sleep(time.Second)
	close(stop)
	<-done
	lines := w.stop(t)
	if v.owner != owner {
		t.Errorf("VIP %s moved from %s to %s when %s restarted", vip, owner, v.owner, other.Name)
	}
	if garps := announcements(lines, e.macs[other.Name], vip); len(garps) > 0 {
		t.Errorf("%s announced VIP %s, owned by %s, while it restarted (%d ARP packets):\n%s", other.Name, vip, owner, len(garps), firstLines(strings.Join(garps, "\n"), 6))
	}
	if len(wrong) > 0 {
		t.Errorf("the client's neighbour entry for %s left the owner %s (%s) while %s (%s) restarted:\n%s", vip, owner, e.macs[owner], other.Name, e.macs[other.Name], firstLines(strings.Join(wrong, "\n"), 6))
	}
}

// announcements picks the ARP packets (tcpdump -e lines) sent by mac that
// announce vip: gratuitous requests and replies.
func announcements(lines []string, mac string, vip netip.Addr) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(strings.Fields(l + " x x")[1], mac) && (strings.Contains(l, "tell "+vip.String()+",") || strings.Contains(l, "reply "+vip.String()+" is-at")) {
			out = append(out, l)
		}
	}
	return out
}

// blockGossip drops gossip (TCP and UDP port gossipPort) to and from node
// n on the switch's bridge; the returned function lifts the block.
func (x *tc) blockGossip(n *demo.Node) func() {
	t := x.t
	t.Helper()
	table := "nltblock"
	script := fmt.Sprintf(`table bridge %[1]s {
	chain gossip {
		type filter hook forward priority 0; policy accept;
		iifname "%[2]s" meta l4proto { tcp, udp } th dport %[3]d drop
		oifname "%[2]s" meta l4proto { tcp, udp } th dport %[3]d drop
	}
}
`, table, n.Name, gossipPort)
	if r := inNS(x.c.Switch, nil, []byte(script), "nft", "-f", "-"); r.err != nil {
		t.Fatalf("block gossip of %s: %v", n.Name, r)
	}
	done := false
	lift := func() {
		if done {
			return
		}
		done = true
		if r := inNS(x.c.Switch, nil, nil, "nft", "delete", "table", "bridge", table); r.err != nil {
			t.Errorf("unblock gossip of %s: %v", n.Name, r)
		}
	}
	t.Cleanup(lift)
	return lift
}

// testLeaveOwner: the client opens short connections to the VIP without
// pause while its owner leaves gracefully; none may fail.
func (e *lbEnv) testLeaveOwner(t *testing.T) {
	x := e.tc
	vip := netip.AddrPortFrom(e.web.vip, 80)
	owner := x.c.Node(e.web.owner)

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	w := watchARP(t, e.c1)
	stop := make(chan struct{})
	done := make(chan struct{})
	arpDone := make(chan struct{})
	start := time.Now()
	// ARP requests all along, so that every node that answers for the VIP
	// shows in the capture.
	go func() {
		defer close(arpDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			inNS(e.c1.ns, nil, nil, "arping", "-c", "1", "-w", "1", "-I", "eth0", e.web.vip.String())
			time.Sleep(100 * time.Millisecond)
		}
	}()
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			_, err := askTCP(e.c1.ns, vip, time.Second)
			if err != nil {
				failed.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("+%s: %v", t0.Sub(start).Round(time.Millisecond), err))
				mu.Unlock()
			} else {
				ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	t.Logf("+%s: netloom leave on %s (the VIP's owner)", time.Since(start).Round(time.Millisecond), owner.Name)
	if err := x.c.Leave(t.Context(), owner); err != nil {
		close(stop)
		<-done
		<-arpDone
		t.Fatal(err)
	}
	t.Logf("+%s: %s's agent exited", time.Since(start).Round(time.Millisecond), owner.Name)
	v := x.settledWhere("web", true, movedFrom(owner.Name, e.web.vip), e.others(owner.Name)...)
	eventually(t, 10*time.Second, "the client's neighbour entry follows the VIP to "+v.owner, func() error {
		mac, state, err := neighMAC(e.c1, e.web.vip)
		if err != nil {
			return err
		}
		if mac != e.macs[v.owner] {
			return fmt.Errorf("neighbour %s is %q (%s), want %s (%s)", e.web.vip, mac, state, e.macs[v.owner], v.owner)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	<-arpDone
	lines := w.stop(t)
	// Once the new owner announced the VIP, the leaving node must not answer
	// for it any more: two answers let clients pick the node that goes.
	oldMAC, newMAC := e.macs[owner.Name], e.macs[v.owner]
	var split []string
	taken := false
	for _, l := range lines {
		if len(announcements([]string{l}, newMAC, e.web.vip)) > 0 {
			taken = true
		}
		if taken && len(announcements([]string{l}, oldMAC, e.web.vip)) > 0 {
			split = append(split, l)
		}
	}
	if len(split) > 0 {
		t.Errorf("%s (leaving) still answered ARP for %s after %s announced it (%d packets):\n%s", owner.Name, e.web.vip, v.owner, len(split), firstLines(strings.Join(split, "\n"), 6))
	}
	t.Logf("graceful leave of %s: VIP now announced by %s; %d connections answered, %d failed", owner.Name, v.owner, ok.Load(), failed.Load())
	if failed.Load() != 0 {
		var resets []string
		for _, l := range lines {
			if strings.Contains(l, "flags [r") {
				resets = append(resets, l)
			}
		}
		t.Errorf("%d connections to %s failed while its owner %s left gracefully:\n%s\nTCP resets the client received (MACs: %v):\n%s", failed.Load(), vip, owner.Name,
			strings.Join(failures, "\n"), e.macs, firstLines(strings.Join(resets, "\n"), 10))
	}
	if ok.Load() < 20 {
		t.Errorf("only %d connections answered during the leave", ok.Load())
	}
}
