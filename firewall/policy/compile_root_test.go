package policy

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
	networkingv1 "k8s.io/api/networking/v1"
)

// Kernel tests: each works in network namespaces it creates and deletes
// (see nfttest); nothing is added to the test process's own namespace.

// nsApplier returns an Applier that opens its own connection in ns.
func nsApplier(t testing.TB, ns string) *nft.Applier {
	t.Helper()
	a := nft.NewApplier(nft.WithNetNS(nfttest.NSHandle(t, ns)))
	t.Cleanup(func() { a.Close() })
	return a
}

// checkKernel asserts that nft's listing of the table is the model.
func checkKernel(t *testing.T, ns string, m nft.Model) {
	t.Helper()
	out, err := nfttest.ListTable(ns, firewall.TableFamily, firewall.TableName)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nft.Canonical(m.String()), nft.Canonical(out)); diff != "" {
		t.Errorf("nft list table differs from the model (-model +nft):\n%s", diff)
	}
}

func baseRuleset() nft.Model {
	return firewall.Ruleset(firewall.Config{ClusterCIDR: addrPrefix("10.244.0.0/16"), Bridge: "nl-br", WGIface: "nl-wg"})
}

// Every golden case, applied: the kernel's listing is the model's text, so
// the expressions sent decode to the rules the golden files show.
func TestGoldenModelsInKernel(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	for _, tt := range goldenCases {
		s := fixture()
		s.Policies = nil
		for _, doc := range tt.policies {
			s.Policies = append(s.Policies, policy(t, doc))
		}
		m := nft.Merge(baseRuleset(), Compile(s, "n1", tt.opts).Model)
		a.Invalidate()
		if err := a.Apply(m); err != nil {
			t.Fatalf("%s: Apply: %v", tt.name, err)
		}
		checkKernel(t, ns, m)
	}
}

// Incremental updates: pods, labels and policies change; each Apply sends
// only the difference, and the kernel's table is the new model each time.
func TestIncrementalApply(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	s := fixture()
	apply := func(step string, wantIncremental bool) nft.Model {
		t.Helper()
		m := nft.Merge(baseRuleset(), Compile(s, "n1", Options{LogDrops: true}).Model)
		if err := a.Apply(m); err != nil {
			t.Fatalf("%s: Apply: %v", step, err)
		}
		st := a.LastApply()
		if st.Incremental != wantIncremental {
			t.Errorf("%s: incremental = %v, want %v (%+v)", step, st.Incremental, wantIncremental, st)
		}
		t.Logf("%s: %+v", step, st)
		checkKernel(t, ns, m)
		return m
	}
	apply("first", false)

	// A pod appears in a peer namespace: set elements only.
	s.Pods = append(s.Pods, Pod{Namespace: "x", Name: "d", IP: addr4("10.244.2.20"), Node: "n2"})
	apply("peer pod added", true)
	if st := a.LastApply(); !strings.Contains(st.Change, "chains +0 -0 ~0") {
		t.Errorf("peer pod added changed chains: %s", st.Change)
	}

	// A local pod gets the selected label: a map element.
	s.Pods[4].Labels = map[string]string{"app": "api"} // y/c
	apply("local pod selected", true)

	// A new policy selecting y/b: a new class chain, new sets, the map
	// element of y/b moves to it, the old class chain goes away.
	s.Policies = append(s.Policies, policy(t, `
metadata: {namespace: "y", name: named}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}, {port: 9000, endPort: 9100, protocol: SCTP}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]`))
	apply("policy added", true)

	// The same model again: nothing sent.
	m := apply("unchanged", true)
	if st := a.LastApply(); st.Messages != 0 {
		t.Errorf("unchanged model sent %d messages", st.Messages)
	}

	// Policies deleted: chains, sets and counters removed.
	s.Policies = nil
	apply("all policies deleted", true)

	// A base chain's priority changes: only a replacement can do that.
	m2 := nft.Merge(baseRuleset(), Compile(s, "n1", Options{}).Model)
	for i := range m2.Chains {
		if m2.Chains[i].Name == ChainForward {
			m2.Chains[i].Priority++
		}
	}
	if err := a.Apply(m2); err != nil {
		t.Fatalf("Apply with new priority: %v", err)
	}
	if st := a.LastApply(); st.Incremental || !strings.Contains(st.FullReason, "priority") {
		t.Errorf("priority change: %+v, want a full replacement", st)
	}
	checkKernel(t, ns, m2)
	_ = m
}

// Counters: packets dropped by a class and allowed by a policy are read back
// per policy.
func TestCountersFor(t *testing.T) {
	s := fixture()
	c := Compile(s, "n1", Options{})
	var allowed, dropped string
	for name, ref := range c.Counters {
		if ref.Dropped {
			dropped = name
		} else {
			allowed = name
		}
	}
	got := CountersFor(c, map[string]nft.CounterValue{
		allowed: {Packets: 3, Bytes: 300},
		dropped: {Packets: 2, Bytes: 120},
		"other": {Packets: 9},
	})
	want := map[string]DirCounters{"y/allow-x-http": {Ingress: Counts{
		AllowedPackets: 3, AllowedBytes: 300, DroppedPackets: 2, DroppedBytes: 120,
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CountersFor (-want +got):\n%s", diff)
	}
}

// Real packets: a router namespace plays node n1 and applies the compiled
// model in its forward hook between a client (x/a, on another node) and a
// server (y/b, local).
//
//	client 10.244.2.10 --veth-- router (10.244.2.1, 10.244.1.1) --veth-- server 10.244.1.11
func TestPolicyPackets(t *testing.T) {
	nfttest.NeedRoot(t, "socat", "timeout")
	cli, router, srv := nfttest.NewNS(t), nfttest.NewNS(t), nfttest.NewNS(t)
	nfttest.Run(t, "ip", "-n", cli, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", router)
	nfttest.Run(t, "ip", "-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "r1", "netns", router)
	nfttest.Run(t, "ip", "-n", cli, "addr", "add", "10.244.2.10/24", "dev", "c0")
	nfttest.Run(t, "ip", "-n", cli, "link", "set", "c0", "up")
	nfttest.Run(t, "ip", "-n", cli, "route", "add", "default", "via", "10.244.2.1")
	nfttest.Run(t, "ip", "-n", srv, "addr", "add", "10.244.1.11/24", "dev", "s0")
	nfttest.Run(t, "ip", "-n", srv, "link", "set", "s0", "up")
	nfttest.Run(t, "ip", "-n", srv, "route", "add", "default", "via", "10.244.1.1")
	nfttest.Run(t, "ip", "-n", router, "addr", "add", "10.244.2.1/24", "dev", "r0")
	nfttest.Run(t, "ip", "-n", router, "addr", "add", "10.244.1.1/24", "dev", "r1")
	nfttest.Run(t, "ip", "-n", router, "link", "set", "r0", "up")
	nfttest.Run(t, "ip", "-n", router, "link", "set", "r1", "up")
	nfttest.Run(t, "ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	for _, port := range []int{80, 81} {
		cmd := exec.Command("ip", "netns", "exec", srv, "socat",
			fmt.Sprintf("TCP4-LISTEN:%d,reuseaddr,fork", port), "EXEC:cat")
		if err := cmd.Start(); err != nil {
			t.Fatalf("socat server: %v", err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	connect := func(port int) error {
		return exec.Command("ip", "netns", "exec", cli, "timeout", "3", "socat", "-u", "/dev/null",
			fmt.Sprintf("TCP4:10.244.1.11:%d,connect-timeout=1", port)).Run()
	}
	// Wait for the servers (no policy yet: everything passes).
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = connect(81); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no connection before any policy: %v", err)
	}

	s := fixture() // y/allow-x-http: y/b accepts TCP 80 from namespace x
	a := nsApplier(t, router)
	if err := a.Apply(nft.Merge(baseRuleset(), Compile(s, "n1", Options{}).Model)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := connect(80); err != nil {
		t.Errorf("x/a -> y/b:80 allowed by policy, connect failed: %v", err)
	}
	if err := connect(81); err == nil {
		t.Errorf("x/a -> y/b:81 denied by policy, connect succeeded")
	}
	// Trace says the same about these packets.
	c := Compile(s, "n1", Options{})
	if tr := Trace(c, Packet{Src: addr4("10.244.2.10"), Dst: addr4("10.244.1.11"), Protocol: TCP, Port: 81}); tr.Allowed {
		t.Errorf("trace allows port 81: %+v", tr)
	}

	// Allow 81 too (an incremental update): it connects, 80 still does.
	s.Policies[0].Spec.Ingress[0].Ports = append(s.Policies[0].Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: intOrStr(81)})
	if err := a.Apply(nft.Merge(baseRuleset(), Compile(s, "n1", Options{}).Model)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !a.LastApply().Incremental {
		t.Errorf("port added was not incremental: %+v", a.LastApply())
	}
	for _, port := range []int{80, 81} {
		if err := connect(port); err != nil {
			t.Errorf("x/a -> y/b:%d allowed after the update, connect failed: %v", port, err)
		}
	}
	// The counters saw it.
	vals, err := a.Counters(firewall.TableFamily, firewall.TableName)
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	cs := CountersFor(Compile(s, "n1", Options{}), vals)
	got := cs["y/allow-x-http"].Ingress
	if got.AllowedPackets < 3 || got.DroppedPackets < 1 {
		t.Errorf("counters of y/allow-x-http = %+v, want >= 3 allowed (connections) and >= 1 dropped", got)
	}
}

// Random sequences of snapshots (policies, labels and pods all change),
// each applied as an update of the previous one: the kernel's table is the
// model every time, and the update is never refused (no fallback).
func TestIncrementalRandom(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	steps := 40
	if testing.Short() {
		steps = 10
	}
	r := rand.New(rand.NewPCG(42, 1))
	opts := GenOptions{Namespaces: 4, PodsPerNamespace: 6, Nodes: 2, Policies: 10}
	for i := range steps {
		s := RandomSnapshot(r, opts)
		if i%3 == 2 {
			s.Pods = s.Pods[:len(s.Pods)-r.IntN(len(s.Pods)/2)] // pods go away
		}
		m := nft.Merge(baseRuleset(), Compile(s, "node1", Options{LogDrops: i%2 == 0}).Model)
		if err := a.Apply(m); err != nil {
			t.Fatalf("step %d: Apply: %v", i, err)
		}
		st := a.LastApply()
		if i > 0 && !st.Incremental {
			t.Errorf("step %d: full replacement: %s", i, st.FullReason)
		}
		checkKernel(t, ns, m)
	}
}
