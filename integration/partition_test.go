package integration

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
)

// TestPartitionHeals partitions one cluster of four nodes twice: first one
// node alone against the others (its switch port goes down), then two
// against two on the same switch (an nftables bridge table in the switch
// namespace drops the frames between the halves). During each partition
// both sides give a service the same requested address, create an object,
// and one side deletes an object the other still has. The partition lasts
// past memberlist's gossip to the dead (holdPartition), after which only the
// agents' calls to their failed members (mesh.RunRejoin) can end it. After
// the heal, without any restart, every node must see every member alive,
// hold the merged store (last writer wins, the delete wins over the older
// object), agree on every VIP and its owner, leave the contested address to
// the older service and report the conflict of the younger one; on the
// segment each VIP is answered by its owner alone. The time from the heal
// until all of this holds is logged ("merged in"), a figure, not an
// assertion.
func TestPartitionHeals(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "arping", "nft")
	x := newCluster(t, demo.Options{Nodes: 4, PodsPerNode: 1, ExtraAgentArgs: lbTimers})
	x.start()
	pods := x.c.Pods()
	x.startServers(pods)
	e := &partEnv{tc: x, macs: x.nodeMACs()}
	e.c1 = x.addClient("c1", client1Addr)
	x.mustApply(x.node(1), poolManifest("lan", true, lbPool)+podsManifest(pods, nil))
	// Each side of a cut applies a service asking for an address of the
	// pool: every node must have it before the first cut.
	eventually(t, 20*time.Second, "every node lists AddressPool lan", func() error {
		for _, n := range x.c.Nodes {
			pools, err := x.getList(n, "addresspools")
			if err != nil {
				return err
			}
			if find(pools, "", "lan") == nil {
				return fmt.Errorf("%s does not list AddressPool lan", n.Name)
			}
		}
		return nil
	})

	n1, n2, n3, n4 := x.node(1), x.node(2), x.node(3), x.node(4)
	t.Run("OneNodeCutOff", func(t *testing.T) {
		e.with(t).run(t, partition{
			a: []*demo.Node{n1, n2, n4}, b: []*demo.Node{n3},
			svcA: "side-a", svcB: "side-b",
			contested: poolAddr(4), // the pool's 5th address
			cut:       e.cutPort(n3),
		})
	})
	// The second partition starts from a whole cluster.
	if err := x.c.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatalf("cluster not whole again after OneNodeCutOff: %v", err)
	}
	t.Run("TwoAgainstTwo", func(t *testing.T) {
		e.with(t).run(t, partition{
			a: []*demo.Node{n1, n2}, b: []*demo.Node{n3, n4},
			svcA: "pair-a", svcB: "pair-b",
			contested: poolAddr(6), // the pool's 7th address
			cut:       e.splitSwitch([]*demo.Node{n1, n2}, []*demo.Node{n3, n4}),
		})
	})
}

// holdPartition is how long a partition lasts after each side saw the
// other dead: longer than memberlist's GossipToTheDeadTime (30 s).
const holdPartition = 32 * time.Second

// partEnv is the cluster of TestPartitionHeals with its LAN client.
type partEnv struct {
	*tc
	c1   *client
	macs map[string]string // node -> eth0 MAC
}

func (e *partEnv) with(t *testing.T) *partEnv {
	c := *e
	c.tc = e.tc.with(t)
	return &c
}

// partition is one partition scenario: sides a and b (a[0] and b[0] apply
// the services svcA and svcB, both asking for contested), and cut, which
// partitions the cluster and returns the heal.
type partition struct {
	a, b       []*demo.Node
	svcA, svcB string
	contested  netip.Addr
	cut        func(t *testing.T) (heal func())
}

// cutPort returns a cut that sets n's port of the switch down (n alone
// against the rest); the heal sets it up again, also at the end of the test.
func (e *partEnv) cutPort(n *demo.Node) func(t *testing.T) func() {
	return func(t *testing.T) func() {
		set := func(state string) error {
			if r := inNS(e.c.Switch, nil, nil, "ip", "link", "set", n.Name, state); r.err != nil {
				return fmt.Errorf("set %s's switch port %s: %v", n.Name, state, r)
			}
			return nil
		}
		if err := set("down"); err != nil {
			t.Fatal(err)
		}
		return onceHeal(t, func() error { return set("up") })
	}
}

// splitSwitch returns a cut that adds, in the switch namespace, a bridge
// table dropping every frame between the ports of a and those of b (the
// switch ports are named after the nodes); the heal deletes the table,
// also at the end of the test.
func (e *partEnv) splitSwitch(a, b []*demo.Node) func(t *testing.T) func() {
	const table = "nlpart"
	ports := func(ns []*demo.Node) string {
		q := make([]string, len(ns))
		for i, n := range ns {
			q[i] = fmt.Sprintf("%q", n.Name)
		}
		return "{ " + strings.Join(q, ", ") + " }"
	}
	script := fmt.Sprintf(`table bridge %[1]s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname %[2]s oifname %[3]s drop
		iifname %[3]s oifname %[2]s drop
	}
}
`, table, ports(a), ports(b))
	return func(t *testing.T) func() {
		ls, err := links(e.c.Switch)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range append(slices.Clone(a), b...) {
			if !slices.Contains(ls, n.Name) {
				t.Fatalf("the switch namespace %s has no port %s (links %v)", e.c.Switch, n.Name, ls)
			}
		}
		if r := inNS(e.c.Switch, nil, []byte(script), "nft", "-f", "-"); r.err != nil {
			t.Fatalf("partition the switch: %v\n%s", r, script)
		}
		return onceHeal(t, func() error {
			if r := inNS(e.c.Switch, nil, nil, "nft", "delete", "table", "bridge", table); r.err != nil {
				return fmt.Errorf("delete the partition table in the switch: %v", r)
			}
			return nil
		})
	}
}

// onceHeal returns a heal that runs undo once; it also runs at the end of
// the test when the test did not heal.
func onceHeal(t *testing.T, undo func() error) func() {
	done := false
	heal := func() {
		if done {
			return
		}
		done = true
		if err := undo(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(heal)
	return heal
}

// run plays one partition scenario.
func (e *partEnv) run(t *testing.T, p partition) {
	x := e.tc
	na, nb := p.a[0], p.b[0]
	tag := randHex(2)
	gone := "gone-" + tag                // exists before the cut, deleted on side a during it
	nsA, nsB := "ns-a-"+tag, "ns-b-"+tag // created during the cut, one on each side

	x.mustApply(na, nsLabeled(gone, "made", "before"))
	eventually(t, 20*time.Second, "every node lists namespace "+gone, func() error {
		for _, n := range x.c.Nodes {
			nss, err := x.getList(n, "namespaces")
			if err != nil {
				return err
			}
			if find(nss, "", gone) == nil {
				return fmt.Errorf("%s does not list namespace %s", n.Name, gone)
			}
		}
		return nil
	})
	before := e.agreed(t)

	heal := p.cut(t)
	cut := time.Now()
	eventually(t, 30*time.Second, "each side lists the other side's members dead", func() error {
		for _, s := range [][2][]*demo.Node{{p.a, p.b}, {p.b, p.a}} {
			for _, n := range s[0] {
				st, err := x.c.Status(t.Context(), n)
				if err != nil {
					return err
				}
				for _, o := range s[1] {
					if m, ok := member(st, o.Name); !ok || m.State != "dead" {
						return fmt.Errorf("%s sees %s as %q (listed %t), want dead", n.Name, o.Name, m.State, ok)
					}
				}
			}
		}
		return nil
	})
	dead := time.Now()
	t.Logf("partition %v | %v: each side lists the other dead %s after the cut",
		nodeNames(p.a), nodeNames(p.b), dead.Sub(cut).Round(10*time.Millisecond))

	// Side a first, so that its service is the older one.
	x.mustApply(na, svcManifest(svcSpec{name: p.svcA, lbIP: p.contested.String()})+"---\n"+nsLabeled(nsA, "side", "a"))
	x.mustDelete(na, nsLabeled(gone, "made", "before"))
	x.mustApply(nb, svcManifest(svcSpec{name: p.svcB, lbIP: p.contested.String()})+"---\n"+nsLabeled(nsB, "side", "b"))
	for _, c := range []struct {
		n    *demo.Node
		name string
		side []*demo.Node
	}{{na, p.svcA, p.a}, {nb, p.svcB, p.b}} {
		eventually(t, 20*time.Second, c.n.Name+" gives "+c.name+" "+p.contested.String(), func() error {
			svcs, err := x.services(c.n)
			if err != nil {
				return err
			}
			v := svcs[c.name]
			if v.vip != p.contested || !slices.Contains(nodeNames(c.side), v.owner) {
				return fmt.Errorf("%s: %s has VIP %v announced by %q (pending %q), want %s announced on its side %v",
					c.n.Name, c.name, v.vip, v.owner, v.pending, p.contested, nodeNames(c.side))
			}
			return nil
		})
	}
	// The partition is real: neither side has heard of the other's service.
	for _, c := range [][2]string{{na.Name, p.svcB}, {nb.Name, p.svcA}} {
		if svcs, err := x.services(x.c.Node(c[0])); err != nil {
			t.Error(err)
		} else if _, ok := svcs[c[1]]; ok {
			t.Errorf("during the partition %s lists %s, applied on the other side", c[0], c[1])
		}
	}
	macs, _ := arping(e.c1, p.contested, 2)
	t.Logf("split brain: %s and %s both hold %s; during the partition the client's ARP requests for it were answered by %v",
		p.svcA, p.svcB, p.contested, e.macNames(macs))

	// memberlist goes on gossiping to a member it declared dead for
	// GossipToTheDeadTime (30 s in its LAN configuration), and a partition
	// healed sooner can merge through that alone. Hold the partition longer,
	// so that only the agents' rejoin calls can end it.
	if d := time.Until(dead.Add(holdPartition)); d > 0 {
		t.Logf("holding the partition %s more (until %s after the deaths were seen)", d.Round(10*time.Millisecond), holdPartition)
		time.Sleep(d)
	}
	logAt := map[string]int{} // each agent's log lines before the heal
	for _, n := range x.c.Nodes {
		logAt[n.Name] = len(linesWith(n.LogPath, ""))
	}
	heal()
	healed := time.Now()
	t.Logf("healed %s after the cut", healed.Sub(cut).Round(10*time.Millisecond))
	var alive time.Duration
	var final map[string]svcView
	eventually(t, 60*time.Second, "the two sides merge", func() error {
		v, err := e.merged(t, p, before, nsA, nsB, gone, func() {
			if alive == 0 {
				alive = time.Since(healed)
			}
		})
		final = v
		return err
	})
	merged := time.Since(healed)
	t.Logf("merged in %s (every member alive everywhere after %s): %s", merged.Round(10*time.Millisecond),
		alive.Round(10*time.Millisecond), describeSvcs(final))
	// Who called whom: the agents log each rejoin call that was answered.
	for _, n := range x.c.Nodes {
		var calls []string
		for _, l := range linesWith(n.LogPath, "")[logAt[n.Name]:] {
			if strings.Contains(l, "called a failed member again") {
				calls = append(calls, strings.TrimSpace(l))
			}
		}
		t.Logf("%s: %d rejoin calls answered after the heal %q", n.Name, len(calls), calls)
	}

	// On the segment every VIP is answered by its owner alone, and the
	// client's neighbour entries (some learned during the partition from
	// the other side) follow the owners' gratuitous ARP without a flush.
	for _, name := range slices.Sorted(maps.Keys(final)) {
		v := final[name]
		if !v.vip.IsValid() {
			continue
		}
		want := e.macs[v.owner]
		eventually(t, 15*time.Second, fmt.Sprintf("the client's neighbour entry for %s (%s) is %s's", v.vip, name, v.owner), func() error {
			mac, state, err := neighMAC(e.c1, v.vip)
			if err != nil {
				return err
			}
			if mac != "" && mac != want {
				return fmt.Errorf("neighbour %s is %s (%s, %s), want %s (%s)", v.vip, mac, e.macNames([]string{mac}), state, want, v.owner)
			}
			return nil
		})
		var earlier []string
		eventually(t, 15*time.Second, fmt.Sprintf("ARP for %s (%s) is answered by %s alone", v.vip, name, v.owner), func() error {
			macs, out := arping(e.c1, v.vip, 3)
			if !slices.Equal(macs, []string{want}) {
				earlier = append(earlier, fmt.Sprint(e.macNames(macs)))
				return fmt.Errorf("arping %s: answered by %v, want only %s (%s); arping said:\n%s", v.vip, e.macNames(macs), want, v.owner, out)
			}
			return nil
		})
		if len(earlier) > 0 {
			// Right only after a retry: it must stay right.
			t.Logf("arping %s (%s) was answered by %v before only %s answered", v.vip, name, earlier, v.owner)
			if macs, out := arping(e.c1, v.vip, 3); !slices.Equal(macs, []string{want}) {
				t.Errorf("arping %s (%s) again: answered by %v, want only %s (%s):\n%s", v.vip, name, e.macNames(macs), want, v.owner, out)
			}
		}
		addr := netip.AddrPortFrom(v.vip, 80)
		eventually(t, 30*time.Second, "the client connects to "+addr.String()+" ("+name+")", func() error {
			_, err := askTCP(e.c1.ns, addr, 2*time.Second)
			return err
		})
	}
}

// merged checks, once, that the cluster has merged after the heal of p (see
// TestPartitionHeals) and returns the services every node agrees on. before
// are the services agreed on before the cut; allAlive is called once every
// node sees every member alive.
func (e *partEnv) merged(t *testing.T, p partition, before map[string]svcView, nsA, nsB, gone string, allAlive func()) (map[string]svcView, error) {
	x := e.tc
	sts := map[string]*api.Status{}
	for _, n := range x.c.Nodes {
		st, err := x.c.Status(t.Context(), n)
		if err != nil {
			return nil, err
		}
		if len(st.Members) != len(x.c.Nodes) {
			return nil, fmt.Errorf("%s lists %d members, want %d", n.Name, len(st.Members), len(x.c.Nodes))
		}
		for _, m := range st.Members {
			if m.State != "alive" {
				return nil, fmt.Errorf("%s sees %s as %s", n.Name, m.Name, m.State)
			}
		}
		sts[n.Name] = st
	}
	allAlive()

	var first map[string]svcView
	conflict := false
	for _, n := range x.c.Nodes {
		svcs, err := x.services(n)
		if err != nil {
			return nil, err
		}
		for _, name := range []string{p.svcA, p.svcB} {
			v, ok := svcs[name]
			if !ok {
				return nil, fmt.Errorf("%s does not list service %s", n.Name, name)
			}
			if !v.vip.IsValid() || v.owner == "" || v.pending != "" {
				return nil, fmt.Errorf("%s: %s has VIP %v announced by %q (pending %q)", n.Name, name, v.vip, v.owner, v.pending)
			}
		}
		if first == nil {
			first = svcs
		} else if !maps.Equal(svcs, first) {
			return nil, fmt.Errorf("%s sees the services as %s, %s as %s", n.Name, describeSvcs(svcs), x.c.Nodes[0].Name, describeSvcs(first))
		}
		st := sts[n.Name]
		for name, v := range svcs {
			if !v.vip.IsValid() {
				continue
			}
			if vs, ok := vipOf(st, "default/"+name); !ok || vs.IP != v.vip.String() || vs.Owner != v.owner {
				return nil, fmt.Errorf("%s: status vips has %+v for default/%s, get services %s by %s", n.Name, vs, name, v.vip, v.owner)
			}
		}
		if is, ok := issueOf(st, "default/"+p.svcB); ok && strings.Contains(is.Conflict, p.contested.String()) {
			conflict = true
		}
		nss, err := x.getList(n, "namespaces")
		if err != nil {
			return nil, err
		}
		for _, want := range [][2]string{{nsA, "a"}, {nsB, "b"}} {
			obj := find(nss, "", want[0])
			if obj == nil {
				return nil, fmt.Errorf("%s does not list namespace %s", n.Name, want[0])
			}
			if l := labelsOf(obj); l["side"] != want[1] {
				return nil, fmt.Errorf("%s: namespace %s has labels %v, want side=%s", n.Name, want[0], l, want[1])
			}
		}
		if find(nss, "", gone) != nil {
			return nil, fmt.Errorf("%s still lists namespace %s, deleted on %s during the partition", n.Name, gone, p.a[0].Name)
		}
	}

	a, b := first[p.svcA], first[p.svcB]
	if a.vip != p.contested {
		return nil, fmt.Errorf("the older %s has %s, want the contested %s (%s has %s)", p.svcA, a.vip, p.contested, p.svcB, b.vip)
	}
	if b.vip == p.contested {
		return nil, fmt.Errorf("the younger %s still has the contested %s", p.svcB, p.contested)
	}
	held := map[netip.Addr]string{}
	for _, name := range slices.Sorted(maps.Keys(first)) {
		v := first[name]
		if !v.vip.IsValid() {
			continue
		}
		if o, dup := held[v.vip]; dup {
			return nil, fmt.Errorf("services %s and %s both hold %s", o, name, v.vip)
		}
		held[v.vip] = name
		if x.c.Node(v.owner) == nil {
			return nil, fmt.Errorf("%s is announced by %q, not a node", name, v.owner)
		}
	}
	for name, v := range before {
		if first[name].vip != v.vip {
			return nil, fmt.Errorf("service %s had %s before the partition and has %v after it", name, v.vip, first[name].vip)
		}
	}
	if !conflict {
		for _, n := range x.c.Nodes {
			r := x.cli(n, nil, "events", "-o", "json")
			if r.err != nil {
				return nil, fmt.Errorf("events on %s: %v", n.Name, r)
			}
			for _, l := range strings.Split(r.stdout, "\n") {
				if strings.Contains(l, `"vip-conflict"`) && strings.Contains(l, `"default/`+p.svcB+`"`) {
					conflict = true
				}
			}
		}
	}
	if !conflict {
		return nil, fmt.Errorf("no node reports the conflict of %s over %s (status serviceIssues or a vip-conflict event)", p.svcB, p.contested)
	}
	return first, nil
}

// agreed waits until every node lists the same services, every
// LoadBalancer service with a VIP and an owner, and returns them.
func (e *partEnv) agreed(t *testing.T) map[string]svcView {
	x := e.tc
	var got map[string]svcView
	eventually(t, 30*time.Second, "every node agrees on the services", func() error {
		var first map[string]svcView
		for _, n := range x.c.Nodes {
			svcs, err := x.services(n)
			if err != nil {
				return err
			}
			for name, v := range svcs {
				if v.pending != "" || !v.vip.IsValid() || v.owner == "" {
					return fmt.Errorf("%s: %s has VIP %v announced by %q (pending %q)", n.Name, name, v.vip, v.owner, v.pending)
				}
			}
			if first == nil {
				first = svcs
			} else if !maps.Equal(svcs, first) {
				return fmt.Errorf("%s sees the services as %s, %s as %s", n.Name, describeSvcs(svcs), x.c.Nodes[0].Name, describeSvcs(first))
			}
		}
		got = first
		return nil
	})
	return got
}

// macNames names the nodes (or "other") whose eth0 has each MAC.
func (e *partEnv) macNames(macs []string) []string {
	out := make([]string, len(macs))
	for i, m := range macs {
		out[i] = m + " (other)"
		for n, nm := range e.macs {
			if nm == m {
				out[i] = m + " (" + n + ")"
			}
		}
	}
	return out
}

// nsLabeled is a Namespace with one label.
func nsLabeled(name, key, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    %s: %q\n", name, key, value)
}

// poolAddr is the address i after the first of lbPool.
func poolAddr(i int) netip.Addr {
	a := lbPoolFirst
	for range i {
		a = a.Next()
	}
	return a
}

func nodeNames(ns []*demo.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

// describe prints services as "name=VIP@owner ...", sorted.
func describeSvcs(svcs map[string]svcView) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(svcs)) {
		v := svcs[name]
		s := fmt.Sprintf("%s=%v@%s", name, v.vip, v.owner)
		if v.pending != "" {
			s += fmt.Sprintf("(pending %q)", v.pending)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
