package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netloom/netloom/node/demo"
)

// chaosFaults is how many faults TestChaos applies; NETLOOM_CHAOS_FAULTS
// sets a longer run and NETLOOM_CHAOS_SEED replays one (the seed is logged).
const chaosFaults = 7

// chaosKinds are the faults TestChaos draws from; every run goes through
// them in a seeded order, one kind per fault until all had their turn.
var chaosKinds = []string{"link", "partition", "kill-agent", "kill-wireguard", "restart", "leave-rejoin", "loss"}

// TestChaos applies seeded random faults, one after another, to a 5-node
// cluster with pods, two LoadBalancer services, a ClusterIP and a
// NetworkPolicy, under continuous traffic (a LAN client to the VIPs, a pod
// to the ClusterIP and to another node's pod), and writes objects during
// each fault (on both sides of a partition). After each heal it waits for
// the invariants: every member alive everywhere; one subnet per node, no
// two alike; WireGuard peers and routes equal to the membership; the same
// objects on every node, none lost, none resurrected after a delete; the
// same services everywhere, every VIP on one service and answered on the
// LAN by its owner alone; every pod reaching every other pod, the
// ClusterIP and the VIPs, and the guarded pod reached by the pods its
// policy allows and by no other. The time from the heal until the
// invariants hold is logged per fault kind.
func TestChaos(t *testing.T) {
	needRoot(t)
	t.Parallel()
	needTools(t, "arping", "nft")
	faults := envInt(t, "NETLOOM_CHAOS_FAULTS", chaosFaults)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("NETLOOM_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("NETLOOM_CHAOS_SEED=%q is not a number", s)
		}
		seed = v
	}
	t.Logf("seed %d (replay: NETLOOM_CHAOS_SEED=%d go test -run TestChaos ./integration/)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))

	x := newCluster(t, demo.Options{Nodes: 5, PodsPerNode: 1, ExtraAgentArgs: lbTimers})
	x.start()
	ch := &chaos{tc: x, rng: rng, macs: x.nodeMACs(), objects: map[string]bool{}}
	ch.part = &partEnv{tc: x, macs: ch.macs}
	ch.client = x.addClient("c1", client1Addr)
	ch.db, _ = x.c.AddPod(context.Background(), x.node(3), "db")
	if ch.db == nil {
		t.Fatal("add pod db on node3 failed")
	}
	x.startServers(x.c.Pods())
	ch.applyBase()
	if _, _, err := ch.waitInvariants(time.Now(), 3*time.Minute); err != nil {
		t.Fatalf("invariants before any fault: %v", err)
	}
	traffic := ch.startTraffic()

	took := map[string][]time.Duration{}
	var order []string
	for i := range faults {
		if i%len(chaosKinds) == 0 {
			order = slices.Clone(chaosKinds)
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		kind := order[i%len(chaosKinds)]
		victim := x.node(1 + rng.IntN(len(x.c.Nodes)))
		before := traffic.snapshot()
		healed := ch.fault(i, kind, victim)
		state, data, err := ch.waitInvariants(healed, 3*time.Minute)
		if err != nil {
			t.Fatalf("fault %d (%s of %s, seed %d): the invariants do not hold 3 minutes after the heal: %v", i, kind, victim.Name, seed, err)
		}
		took[kind] = append(took[kind], state)
		t.Logf("fault %d: %s of %s; after the heal the state agrees in %s, the data plane checked out %s; traffic during it: %s", i, kind, victim.Name,
			state.Round(10*time.Millisecond), data.Round(10*time.Millisecond), traffic.since(before))
	}
	traffic.stop()
	for _, k := range slices.Sorted(maps.Keys(took)) {
		ds := took[k]
		slices.Sort(ds)
		t.Logf("state agrees after %-15s n=%d median %s worst %s", k, len(ds), ds[len(ds)/2].Round(10*time.Millisecond), ds[len(ds)-1].Round(10*time.Millisecond))
	}
}

// chaos is the cluster of TestChaos and what it expects of it.
type chaos struct {
	*tc
	rng    *rand.Rand
	part   *partEnv
	client *client
	db     *demo.Pod
	macs   map[string]string
	// objects are the chaos namespaces applied (true) or deleted (false).
	objects map[string]bool
	n       int // namespaces made so far
	// services as every node agreed on them in the last invariants check.
	agreed map[string]svcView
}

// applyBase applies the pods' labels, an address pool, the services and
// the policy that guards pod db: only pods of node1 may reach it.
func (ch *chaos) applyBase() {
	pods := ch.c.Pods()
	var app []*demo.Pod
	for _, p := range pods {
		if p != ch.db {
			app = append(app, p)
		}
	}
	manifest := podsManifest(app, nil) + fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: default
  labels:
    role: db
spec:
  containers:
  - name: server
    image: none
    ports:
    - name: http
      containerPort: %d
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: guard-db
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          node: node1
`, serverPort) + "---\n" + poolManifest("lan", true, lbPool) +
		svcManifest(svcSpec{name: "web"}) + svcManifest(svcSpec{name: "webl", local: true}) +
		svcManifest(svcSpec{name: "inner", typ: "ClusterIP"})
	ch.mustApply(ch.node(1), manifest)
}

// newObjects applies a new chaos namespace on each of nodes and, when there
// is one from an earlier fault (known on both sides of a partition),
// deletes it on the first of them.
func (ch *chaos) newObjects(nodes ...*demo.Node) {
	t := ch.t
	t.Helper()
	var older []string
	for name, ok := range ch.objects {
		if ok {
			older = append(older, name)
		}
	}
	sort.Strings(older)
	for _, n := range nodes {
		ch.n++
		name := fmt.Sprintf("chaos-%d", ch.n)
		ch.mustApply(n, nsLabeled(name, "made-on", n.Name))
		ch.objects[name] = true
	}
	if len(older) > 0 {
		name := older[ch.rng.IntN(len(older))]
		ch.mustDelete(nodes[0], nsLabeled(name, "made-on", "any"))
		ch.objects[name] = false
	}
}

// fault applies one fault of kind to victim, writes objects while it
// lasts, heals it and returns when it was healed.
func (ch *chaos) fault(i int, kind string, victim *demo.Node) time.Time {
	t := ch.t
	t.Helper()
	other := ch.node(1)
	if other == victim {
		other = ch.node(2)
	}
	hold := time.Duration(2000+ch.rng.IntN(4000)) * time.Millisecond
	ctx := context.Background()
	switch kind {
	case "link": // the victim's switch port goes down, then up
		heal := ch.part.cutPort(victim)(t)
		ch.newObjects(victim, other)
		time.Sleep(hold)
		heal()
	case "partition": // the LAN splits in two halves
		perm := ch.rng.Perm(len(ch.c.Nodes))
		var a, b []*demo.Node
		for j, p := range perm {
			if j < 2 {
				a = append(a, ch.c.Nodes[p])
			} else {
				b = append(b, ch.c.Nodes[p])
			}
		}
		heal := ch.part.splitSwitch(a, b)(t)
		ch.newObjects(a[0], b[0])
		time.Sleep(hold)
		heal()
	case "kill-agent":
		if err := ch.c.StopAgent(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ch.newObjects(other)
		time.Sleep(hold)
		if err := ch.c.StartAgent(victim); err != nil {
			t.Fatal(err)
		}
	case "kill-wireguard":
		pid, _, err := companionPid(victim)
		if err != nil {
			// Kernel WireGuard: no companion to kill; kill the agent instead.
			t.Logf("fault %d: %v; SIGKILL of the agent instead", i, err)
			return ch.fault(i, "kill-agent", victim)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ch.newObjects(other)
	case "restart":
		if err := ch.c.StopAgent(victim, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ch.newObjects(other)
		if err := ch.c.StartAgent(victim); err != nil {
			t.Fatal(err)
		}
	case "leave-rejoin": // drained, left, back with its pods attached again
		pods := slices.Clone(victim.Pods)
		for _, p := range pods {
			if err := ch.c.DelPod(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if err := ch.c.Leave(ctx, victim); err != nil {
			t.Fatal(err)
		}
		ch.newObjects(other)
		if err := ch.c.StartAgent(victim); err != nil {
			t.Fatal(err)
		}
		if err := ch.c.WaitReady(ctx, 60*time.Second); err != nil {
			t.Fatalf("fault %d: %s not ready after rejoining: %v", i, victim.Name, err)
		}
		var back []*demo.Pod
		for _, p := range pods {
			np, err := ch.c.AddPod(ctx, victim, p.Name)
			if err != nil {
				t.Fatal(err)
			}
			if p == ch.db {
				ch.db = np
			}
			back = append(back, np)
		}
		ch.startServers(back)
	case "loss": // the victim's switch port drops a third of its frames
		heal := ch.lossyPort(victim, 33)
		ch.newObjects(victim, other)
		time.Sleep(hold)
		heal()
	default:
		t.Fatalf("unknown fault %q", kind)
	}
	return time.Now()
}

// lossyPort makes the switch drop pct % of the frames to and from n's port
// (random, per frame) and returns the heal.
func (ch *chaos) lossyPort(n *demo.Node, pct int) func() {
	t := ch.t
	const table = "nlloss"
	script := fmt.Sprintf(`table bridge %[1]s {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname %[2]q numgen random mod 100 < %[3]d drop
		oifname %[2]q numgen random mod 100 < %[3]d drop
	}
}
`, table, n.Name, pct)
	if r := inNS(ch.c.Switch, nil, []byte(script), "nft", "-f", "-"); r.err != nil {
		t.Fatalf("make %s's switch port lossy: %v", n.Name, r)
	}
	return onceHeal(t, func() error {
		if r := inNS(ch.c.Switch, nil, nil, "nft", "delete", "table", "bridge", table); r.err != nil {
			return fmt.Errorf("delete the loss table in the switch: %v", r)
		}
		return nil
	})
}

// waitInvariants waits until the state invariants hold, then until the
// data plane does too, within timeout in all, and returns how long each
// took from start.
func (ch *chaos) waitInvariants(start time.Time, timeout time.Duration) (state, data time.Duration, err error) {
	deadline := start.Add(timeout)
	var took []time.Duration
	for _, check := range []func() error{ch.invariants, ch.dataPlane} {
		for {
			err = check()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return 0, 0, err
			}
			time.Sleep(200 * time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	return took[0], took[1], nil
}

// invariants checks, once, the state every node must agree on after a
// heal, and keeps the services for dataPlane.
func (ch *chaos) invariants() error {
	x := ch.tc
	ctx := x.t.Context()
	subnets := map[string]netip.Prefix{}
	for _, n := range x.c.Nodes {
		st, err := x.c.Status(ctx, n)
		if err != nil {
			return err
		}
		if len(st.Members) != len(x.c.Nodes) {
			return fmt.Errorf("%s lists %d members, want %d", n.Name, len(st.Members), len(x.c.Nodes))
		}
		for _, m := range st.Members {
			if m.State != "alive" {
				return fmt.Errorf("%s sees %s as %s", n.Name, m.Name, m.State)
			}
		}
		p, err := netip.ParsePrefix(st.Node.Subnet)
		if err != nil {
			return fmt.Errorf("%s has no subnet (%q)", n.Name, st.Node.Subnet)
		}
		for o, q := range subnets {
			if q.Overlaps(p) {
				return fmt.Errorf("%s and %s both have %s", o, n.Name, p)
			}
		}
		subnets[n.Name] = p
	}
	for _, n := range x.c.Nodes {
		peers, err := x.wgPeers(n)
		if err != nil {
			return err
		}
		var got, want []string
		for _, ips := range peers {
			got = append(got, ips...)
		}
		for o, p := range subnets {
			if o != n.Name {
				want = append(want, p.String())
			}
			routes, err := x.routeTo(n, p)
			if err != nil {
				return err
			}
			if o != n.Name && len(routes) != 1 {
				return fmt.Errorf("%s: routes to %s's subnet %s: %q, want one", n.Name, o, p, routes)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: WireGuard peers allow %v, want the other nodes' subnets %v", n.Name, got, want)
		}
	}
	var want []string
	for name, ok := range ch.objects {
		if ok {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	var services map[string]svcView
	for _, n := range x.c.Nodes {
		items, err := x.getList(n, "namespaces")
		if err != nil {
			return err
		}
		var got []string
		for _, it := range items {
			md, _ := it["metadata"].(map[string]any)
			if name, _ := md["name"].(string); strings.HasPrefix(name, "chaos-") {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s lists the chaos namespaces %v, want %v", n.Name, got, want)
		}
		svcs, err := x.services(n)
		if err != nil {
			return err
		}
		if services == nil {
			services = svcs
		} else if !maps.Equal(svcs, services) {
			return fmt.Errorf("%s sees the services as %s, %s as %s", n.Name, describeSvcs(svcs), x.c.Nodes[0].Name, describeSvcs(services))
		}
	}
	held := map[netip.Addr]string{}
	for _, name := range []string{"web", "webl"} {
		v := services[name]
		if !v.vip.IsValid() || v.owner == "" || v.pending != "" {
			return fmt.Errorf("%s has VIP %v announced by %q (pending %q)", name, v.vip, v.owner, v.pending)
		}
		if o, dup := held[v.vip]; dup {
			return fmt.Errorf("services %s and %s both hold %s", o, name, v.vip)
		}
		held[v.vip] = name
	}
	ch.agreed = services
	return nil
}

// dataPlane checks, once, the traffic the invariants promise, all probes at
// once: pod to pod, pod to the ClusterIP, the guarded pod from the pods
// its policy allows (and not from the others), the client to each VIP,
// whose ARP its owner alone answers.
func (ch *chaos) dataPlane() error {
	services := ch.agreed
	var probes []func() error
	var app []*demo.Pod
	for _, p := range ch.c.Pods() {
		if p != ch.db {
			app = append(app, p)
		}
	}
	for _, from := range app {
		for _, to := range app {
			if from == to {
				continue
			}
			probes = append(probes, func() error {
				if _, err := askTCP(from.NS, netip.AddrPortFrom(to.IP, uint16(serverPort)), 2*time.Second); err != nil {
					return fmt.Errorf("pod %s -> pod %s: %w", from.Name, to.Name, err)
				}
				return nil
			})
		}
		probes = append(probes, func() error {
			if _, err := askTCP(from.NS, netip.AddrPortFrom(services["inner"].clusterIP, 80), 2*time.Second); err != nil {
				return fmt.Errorf("pod %s -> ClusterIP of inner: %w", from.Name, err)
			}
			return nil
		}, func() error {
			allowed := strings.HasPrefix(from.Name, "node1-")
			_, err := askTCP(from.NS, netip.AddrPortFrom(ch.db.IP, uint16(serverPort)), time.Second)
			if allowed && err != nil {
				return fmt.Errorf("pod %s (allowed) -> db: %w", from.Name, err)
			}
			if !allowed && err == nil {
				return fmt.Errorf("pod %s reaches db, which its policy does not allow", from.Name)
			}
			return nil
		})
	}
	for _, name := range []string{"web", "webl"} {
		v := services[name]
		probes = append(probes, func() error {
			macs, out := arping(ch.client, v.vip, 2)
			if want := ch.macs[v.owner]; !slices.Equal(macs, []string{want}) {
				return fmt.Errorf("arping %s (%s): answered by %v, want only %s (%s):\n%s", v.vip, name, ch.part.macNames(macs), want, v.owner, out)
			}
			return nil
		}, func() error {
			if _, err := askTCP(ch.client.ns, netip.AddrPortFrom(v.vip, 80), 2*time.Second); err != nil {
				return fmt.Errorf("client -> %s (%s): %w", v.vip, name, err)
			}
			return nil
		})
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// chaosTraffic counts the outcome of continuous connections: the LAN
// client to web's VIP, and a pod of node1 to a pod of node2 and to inner's
// ClusterIP.
type chaosTraffic struct {
	ok, failed atomic.Int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

type trafficCount struct{ ok, failed int64 }

func (tr *chaosTraffic) snapshot() trafficCount {
	return trafficCount{tr.ok.Load(), tr.failed.Load()}
}

func (tr *chaosTraffic) since(c trafficCount) string {
	return fmt.Sprintf("%d connections answered, %d failed", tr.ok.Load()-c.ok, tr.failed.Load()-c.failed)
}

func (tr *chaosTraffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

// startTraffic starts the continuous connections (from the pods and to the
// addresses of the start: a pod re-attached later is not followed).
func (ch *chaos) startTraffic() *chaosTraffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &chaosTraffic{cancel: cancel}
	services, err := ch.services(ch.node(1))
	if err != nil {
		ch.t.Fatal(err)
	}
	targets := []struct {
		ns   string
		addr netip.AddrPort
	}{
		{ch.client.ns, netip.AddrPortFrom(services["web"].vip, 80)},
		{ch.pod(1, 1).NS, netip.AddrPortFrom(services["inner"].clusterIP, 80)},
	}
	for _, target := range targets {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for ctx.Err() == nil {
				if _, err := askTCP(target.ns, target.addr, time.Second); err != nil {
					tr.failed.Add(1)
				} else {
					tr.ok.Add(1)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	ch.t.Cleanup(tr.stop)
	return tr
}
