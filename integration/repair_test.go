package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/node/demo"
)

// Timings of the drift-repair test. The agents re-read the kernel every
// repairResync; a repair must show within repairBound, a few resyncs plus
// room for a WireGuard handshake and a loaded machine. It is a bound, not
// a measurement.
const (
	repairResync = 2 * time.Second
	repairBound  = 5*repairResync + 5*time.Second
	repairDial   = 2 * time.Second // one probe connection (a lost SYN is resent after 1 s)
	// repairedKind is the kind of the event an agent logs when it put
	// back kernel state that someone changed (events.Repaired).
	repairedKind = "repaired"
)

// repairEnv is a cluster of three nodes with two pods each, a TCP server
// in every pod, the LoadBalancer service "web" (VIP from a pool on the
// LAN, and a ClusterIP), a NetworkPolicy guarding one pod, and a client on
// the LAN. The damaged node owns the VIP and runs the guarded pod, so that
// every damage breaks something the checks see.
type repairEnv struct {
	*tc
	lan *client
	web svcView

	dmg  *demo.Node // the node whose kernel state is damaged
	peer *demo.Node // the allowed pod's node: its WireGuard peer and route on dmg are damaged

	guarded *demo.Pod // on dmg: ingress only from pods labelled access=granted
	allowed *demo.Pod // on peer, access=granted
	denied  *demo.Pod // on the third node, not granted
	local   *demo.Pod // on dmg: asks the ClusterIP

	base repairBase
}

// repairBase is what the test expects never to change, taken once the
// cluster is steady.
type repairBase struct {
	kernel repairKernel
	maps   []nftMap                   // the verdict maps of dmg's table
	nodes  map[string]repairNodeFacts // node name -> facts
}

// repairNodeFacts are a node's facts that no damage may change.
type repairNodeFacts struct {
	subnet    string
	key       string // WireGuard public key
	companion string // "pid N start S" of the userspace WireGuard companion; "" in kernel mode
}

// repairKernel is the kernel state of the damaged node that its agent
// owns.
type repairKernel struct {
	Nft    []string            // table inet netloom, canonical lines (see readNft)
	Peers  map[string][]string // WireGuard public key -> allowed IPs
	Routes []string            // routes into the cluster CIDR, every table
}

// TestRepairKernelDrift damages one node's kernel state by hand, the way
// an operator or another program might (a WireGuard peer removed, a route
// deleted, an nftables verdict map of the service proxy and one of
// NetworkPolicy flushed, the whole nftables table deleted), and checks
// each time that the agent puts it back within a few resync intervals
// (--resync-interval) and says so with a "repaired" event, that the
// policy, the ClusterIP and the VIP work again, and that nothing else
// changed: subnets, WireGuard keys, the VIP's owner, the WireGuard
// companion process, and the other nodes, which have nothing to repair.
func TestRepairKernelDrift(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newRepairEnv(t)
	since := time.Now()

	// The damage that the narrowest mechanism repairs comes first and the
	// deletion of the whole table last, so that one repair missing does
	// not hide the others (each subtest first waits for the cluster to be
	// whole again, and says so when it is not).
	t.Run("WireGuardPeer", func(t *testing.T) { e.with(t).testPeer(t) })
	t.Run("Route", func(t *testing.T) { e.with(t).testRoute(t) })
	t.Run("ServiceMap", func(t *testing.T) { e.with(t).testServiceMap(t) })
	t.Run("PolicyMap", func(t *testing.T) { e.with(t).testPolicyMap(t) })
	t.Run("Table", func(t *testing.T) { e.with(t).testTable(t) })
	t.Run("OtherNodesUntouched", func(t *testing.T) { e.with(t).testOthersQuiet(t, since) })
}

func (e *repairEnv) with(t *testing.T) *repairEnv {
	c := *e
	c.tc = e.tc.with(t)
	return &c
}

// repairPolicy lets pods labelled access=granted, and nothing else, reach
// the pods labelled role=guarded on the servers' TCP port.
var repairPolicy = fmt.Sprintf(`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: guard
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: guarded
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          access: granted
    ports:
    - protocol: TCP
      port: %d
`, serverPort)

func newRepairEnv(t *testing.T) *repairEnv {
	t.Helper()
	args := append(slices.Clone(lbTimers), "--resync-interval", repairResync.String())
	x := newCluster(t, demo.Options{Nodes: 3, PodsPerNode: 2, ExtraAgentArgs: args})
	// A clear message when the binary predates drift repair, rather than
	// agents that refuse an unknown flag.
	if r := inNS(x.node(1).NS, nil, nil, exe, "agent", "--help"); !strings.Contains(r.stdout+r.stderr, "resync-interval") {
		t.Fatalf("netloom agent has no --resync-interval flag: this build has no drift repair (agent --help: %v)", r)
	}
	x.start()
	pods := x.c.Pods()
	x.startServers(pods)
	e := &repairEnv{tc: x}
	e.lan = x.addClient("c1", client1Addr)

	// The service first, to learn which node announces its VIP.
	x.mustApply(x.node(1), poolManifest("lan", true, lbPool)+podsManifest(pods, nil)+svcManifest(svcSpec{name: "web"}))
	web := x.settled("web", true)
	e.dmg = x.c.Node(web.owner)
	if e.dmg == nil {
		t.Fatalf("service web is announced by %q, which is not a node of this cluster", web.owner)
	}
	var others []*demo.Node
	for _, n := range x.c.Nodes {
		if n != e.dmg {
			others = append(others, n)
		}
	}
	e.peer = others[0]
	e.local, e.guarded = e.dmg.Pods[0], e.dmg.Pods[1]
	e.allowed, e.denied = e.peer.Pods[0], others[1].Pods[0]
	// The guarded pod leaves the service (app=db), so that the VIP and the
	// ClusterIP never lead to a pod the policy isolates.
	extra := map[string]map[string]string{
		e.guarded.Name: {"app": "db", "role": "guarded"},
		e.allowed.Name: {"access": "granted"},
	}
	x.mustApply(x.node(2), podsManifest(pods, extra)+repairPolicy)
	e.web = x.settled("web", true)
	if e.web != web {
		t.Fatalf("service web changed when pod labels changed: %+v, was %+v", e.web, web)
	}
	t.Logf("damaged node %s: owns VIP %s (ClusterIP %s) and runs the guarded pod %s (%s); allowed client %s (%s), denied client %s (%s), ClusterIP client %s",
		e.dmg.Name, e.web.vip, e.web.clusterIP, e.guarded.Name, e.guarded.IP, e.allowed.Name, e.allowed.Node, e.denied.Name, e.denied.Node, e.local.Name)

	eventually(t, 30*time.Second, "baseline: the allowed pod connects, the denied one does not, the ClusterIP and the VIP answer", e.checks)
	e.base.kernel = e.steadyKernel(t)
	tab, err := readNft(e.dmg)
	if err != nil {
		t.Fatal(err)
	}
	e.base.maps = tab.maps
	e.base.nodes = map[string]repairNodeFacts{}
	for _, n := range x.c.Nodes {
		f, err := e.facts(n)
		if err != nil {
			t.Fatal(err)
		}
		e.base.nodes[n.Name] = f
	}
	t.Logf("baseline on %s: %d nftables lines, %d WireGuard peers, routes %q", e.dmg.Name, len(e.base.kernel.Nft), len(e.base.kernel.Peers), e.base.kernel.Routes)
	return e
}

// steadyKernel waits until dmg's kernel state has stayed the same for a
// resync interval (the last objects applied have reached every table and
// map) and returns it.
func (e *repairEnv) steadyKernel(t *testing.T) repairKernel {
	t.Helper()
	var last repairKernel
	var lastAt time.Time
	eventually(t, 30*time.Second, e.dmg.Name+"'s kernel state is steady", func() error {
		k, err := e.kernel()
		if err != nil {
			return err
		}
		if lastAt.IsZero() || cmp.Diff(last, k) != "" {
			last, lastAt = k, time.Now()
			return errors.New("kernel state changed since the last look")
		}
		if time.Since(lastAt) < repairResync {
			return errors.New("kernel state not yet the same for a resync interval")
		}
		return nil
	})
	return last
}

// ---- the damage ----

// testPeer removes the WireGuard peer of the allowed pod's node.
func (e *repairEnv) testPeer(t *testing.T) {
	key := e.base.nodes[e.peer.Name].key
	if _, ok := e.base.kernel.Peers[key]; !ok {
		t.Fatalf("%s has no WireGuard peer %s (%s) to remove; peers: %v", e.dmg.Name, key, e.peer.Name, e.base.kernel.Peers)
	}
	e.damage(t, "WireGuard peer "+e.peer.Name+" removed", "wireguard",
		"wg", "set", e.dmg.WGIface, "peer", key, "remove")
}

// testRoute deletes the route to the allowed pod's node's subnet.
func (e *repairEnv) testRoute(t *testing.T) {
	subnet := e.base.nodes[e.peer.Name].subnet
	var line string
	for _, l := range e.base.kernel.Routes {
		if f := strings.Fields(l); len(f) > 0 && f[0] == subnet {
			if line != "" {
				t.Fatalf("%s has more than one route to %s: %q", e.dmg.Name, subnet, e.base.kernel.Routes)
			}
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s has no route to %s's subnet %s: %q", e.dmg.Name, e.peer.Name, subnet, e.base.kernel.Routes)
	}
	cmd := []string{"ip", "-4", "route", "del", subnet}
	f := strings.Fields(line)
	for i := 1; i+1 < len(f); i++ {
		switch f[i] {
		case "dev", "table", "proto":
			cmd = append(cmd, f[i], f[i+1])
		}
	}
	e.damage(t, "route "+line+" deleted", "route", cmd...)
}

// testServiceMap flushes the service proxy's verdict map keyed by service
// address and port: neither the VIP nor the ClusterIP leads anywhere.
func (e *repairEnv) testServiceMap(t *testing.T) {
	m, ok := e.pickMap(func(m nftMap) bool {
		return m.has(e.web.vip.String()) && m.has(e.web.clusterIP.String())
	})
	if !ok {
		t.Fatalf("%s's table inet netloom has no verdict map with both %s and %s: %s", e.dmg.Name, e.web.vip, e.web.clusterIP, e.mapNames())
	}
	e.damage(t, "service map "+m.name+" flushed", "nftables",
		"nft", "flush", "map", "inet", "netloom", m.name)
}

// testPolicyMap flushes the policy's verdict map keyed by the guarded pod's
// address: the pod is no longer isolated, the denied pod gets through.
func (e *repairEnv) testPolicyMap(t *testing.T) {
	m, ok := e.pickMap(func(m nftMap) bool {
		return m.keyed(e.guarded.IP.String()) && !m.has(e.web.vip.String())
	})
	if !ok {
		t.Fatalf("%s's table inet netloom has no verdict map keyed by the guarded pod's address %s: %s", e.dmg.Name, e.guarded.IP, e.mapNames())
	}
	e.damage(t, "policy map "+m.name+" flushed", "nftables",
		"nft", "flush", "map", "inet", "netloom", m.name)
}

// testTable deletes the whole table: service proxy, policy and masquerade.
func (e *repairEnv) testTable(t *testing.T) {
	e.damage(t, "table inet netloom deleted", "nftables",
		"nft", "delete", "table", "inet", "netloom")
}

// testOthersQuiet: the nodes that were never damaged repaired nothing.
func (e *repairEnv) testOthersQuiet(t *testing.T, since time.Time) {
	for _, n := range e.c.Nodes {
		if n == e.dmg {
			continue
		}
		evs, err := e.repairedSince(n, since)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, ev := range evs {
			t.Errorf("%s, whose kernel state nobody touched, logged %q events: %s", n.Name, repairedKind, ev)
		}
	}
}

// damage runs cmd in dmg's namespace once the cluster is whole, then waits
// until dmg's kernel state is as before, the four checks hold, and dmg
// logged a "repaired" event after the damage whose message names keyword
// (any case); then it checks that nothing else changed.
func (e *repairEnv) damage(t *testing.T, what, keyword string, cmd ...string) {
	t.Helper()
	eventually(t, repairBound, "before the damage, the earlier damage is repaired and the four checks hold", func() error {
		return errors.Join(e.kernelAsBefore(), e.checks())
	})
	start := time.Now()
	e.must(e.dmg.NS, cmd...)
	t.Logf("%s on %s: %s", what, e.dmg.Name, strings.Join(cmd, " "))
	if err := e.kernelAsBefore(); err != nil {
		t.Logf("right after the damage: %v", err)
	} else {
		t.Logf("right after the damage the kernel state was already as before (repaired at once?)")
	}
	var found repairEvent
	eventually(t, repairBound, what+" is repaired", func() error {
		errs := []error{e.kernelAsBefore(), e.checks()}
		evs, err := e.repairedSince(e.dmg, start)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		i := slices.IndexFunc(evs, func(ev repairEvent) bool {
			return strings.Contains(strings.ToLower(ev.Message), keyword)
		})
		if i < 0 {
			errs = append(errs, fmt.Errorf("%s logged no %q event naming %q since the damage (those it logged: %q)", e.dmg.Name, repairedKind, keyword, evs))
		} else {
			found = evs[i]
		}
		return errors.Join(errs...)
	})
	t.Logf("repaired within %s; event: %s", time.Since(start).Round(100*time.Millisecond), found)
	e.unchanged(t)
}

// ---- the checks ----

// checks probes, at once: the allowed pod reaches the guarded pod, the
// denied pod does not, the local pod reaches the ClusterIP, the LAN client
// reaches the VIP. It returns every failure.
func (e *repairEnv) checks() error {
	guarded := netip.AddrPortFrom(e.guarded.IP, uint16(serverPort))
	probes := []struct {
		what string
		ns   string
		to   netip.AddrPort
		deny bool
	}{
		{fmt.Sprintf("allowed pod %s -> guarded pod %s", e.allowed.Name, guarded), e.allowed.NS, guarded, false},
		{fmt.Sprintf("denied pod %s -> guarded pod %s", e.denied.Name, guarded), e.denied.NS, guarded, true},
		{fmt.Sprintf("pod %s -> ClusterIP %s:80", e.local.Name, e.web.clusterIP), e.local.NS, netip.AddrPortFrom(e.web.clusterIP, 80), false},
		{fmt.Sprintf("LAN client -> VIP %s:80", e.web.vip), e.lan.ns, netip.AddrPortFrom(e.web.vip, 80), false},
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := askTCP(p.ns, p.to, repairDial)
			if p.deny {
				if err == nil {
					errs[i] = fmt.Errorf("%s: answered %q, want the connection dropped by NetworkPolicy", p.what, s)
				}
				return
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", p.what, err)
				return
			}
			a, err := parseAnswer(s)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("%s: %w", p.what, err)
			case p.to.Addr() == e.guarded.IP && a.pod != e.guarded.Name:
				errs[i] = fmt.Errorf("%s: answered by %s", p.what, a.pod)
			case p.to.Addr() != e.guarded.IP && a.pod == e.guarded.Name:
				errs[i] = fmt.Errorf("%s: answered by the guarded pod, which is not an endpoint of service web", p.what)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// kernelAsBefore compares dmg's kernel state with the baseline.
func (e *repairEnv) kernelAsBefore() error {
	k, err := e.kernel()
	if err != nil {
		return err
	}
	if d := cmp.Diff(e.base.kernel, k); d != "" {
		return fmt.Errorf("kernel state of %s differs from before the damage (-before +now):\n%s", e.dmg.Name, d)
	}
	return nil
}

// kernel reads dmg's table inet netloom, WireGuard peers and cluster
// routes.
func (e *repairEnv) kernel() (repairKernel, error) {
	var k repairKernel
	tab, err := readNft(e.dmg)
	if err != nil {
		return k, err
	}
	k.Nft = tab.lines
	if k.Peers, err = e.wgPeers(e.dmg); err != nil {
		return k, err
	}
	if k.Routes, err = clusterRoutes(e.dmg); err != nil {
		return k, err
	}
	return k, nil
}

// facts reads node n's facts that no damage may change.
func (e *repairEnv) facts(n *demo.Node) (repairNodeFacts, error) {
	st, err := e.c.Status(e.t.Context(), n)
	if err != nil {
		return repairNodeFacts{}, err
	}
	f := repairNodeFacts{subnet: st.Node.Subnet, key: st.Node.WireGuard.PublicKey}
	if wantMode() == "userspace" {
		pid, start, err := companionPid(n)
		if err != nil {
			return f, fmt.Errorf("%s: %w", n.Name, err)
		}
		f.companion = fmt.Sprintf("pid %d start %s", pid, start)
	}
	return f, nil
}

// unchanged checks that every node kept its subnet, WireGuard key and
// WireGuard companion process, sees every member alive, and sees service
// web at the same VIP and ClusterIP announced by the same node.
func (e *repairEnv) unchanged(t *testing.T) {
	t.Helper()
	for _, n := range e.c.Nodes {
		f, err := e.facts(n)
		if err != nil {
			t.Errorf("after the repair: %v", err)
			continue
		}
		if b := e.base.nodes[n.Name]; f != b {
			t.Errorf("after the repair %s has subnet %s, key %s, companion %q; before the damage %s, %s, %q",
				n.Name, f.subnet, f.key, f.companion, b.subnet, b.key, b.companion)
		}
		st, err := e.c.Status(t.Context(), n)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, o := range e.c.Nodes {
			if m, ok := member(st, o.Name); !ok || m.State != "alive" {
				t.Errorf("after the repair %s sees member %s as %q (listed %v), want alive", n.Name, o.Name, m.State, ok)
			}
		}
		if v, ok := vipOf(st, "default/web"); !ok || v.IP != e.web.vip.String() || v.Owner != e.web.owner {
			t.Errorf("after the repair %s's status has %+v for service web, want VIP %s owned by %s", n.Name, v, e.web.vip, e.web.owner)
		}
		svcs, err := e.services(n)
		if err != nil {
			t.Error(err)
			continue
		}
		if v := svcs["web"]; v != e.web {
			t.Errorf("after the repair %s sees service web as %+v, before the damage %+v", n.Name, v, e.web)
		}
	}
}

// ---- events ----

// repairEvent is one event of `netloom events -o json`.
type repairEvent struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Kind    string    `json:"kind"`
	Subject string    `json:"subject"`
	Message string    `json:"message"`
}

func (ev repairEvent) String() string {
	return fmt.Sprintf("%s %s %s %s: %s", ev.Time.Format(time.RFC3339Nano), ev.Node, ev.Kind, ev.Subject, ev.Message)
}

// repairedSince lists node n's "repaired" events logged at or after since.
func (e *repairEnv) repairedSince(n *demo.Node, since time.Time) ([]repairEvent, error) {
	r := e.cli(n, nil, "events", "-o", "json")
	if r.err != nil {
		return nil, fmt.Errorf("events on %s: %v", n.Name, r)
	}
	var out []repairEvent
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var ev repairEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			return nil, fmt.Errorf("events on %s: %v: %q", n.Name, err, l)
		}
		if ev.Kind == repairedKind && !ev.Time.Before(since) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// ---- kernel state ----

// nftTable is a node's table inet netloom as the test compares it.
type nftTable struct {
	lines []string // canonical, sorted
	maps  []nftMap // verdict maps
}

// nftMap is a verdict map and its elements (canonical JSON of [key, verdict]).
type nftMap struct {
	name  string
	elems []string
}

// has reports whether an element mentions the address s.
func (m nftMap) has(s string) bool {
	return slices.ContainsFunc(m.elems, func(e string) bool { return strings.Contains(e, `"`+s+`"`) })
}

// keyed reports whether an element's whole key is the address s.
func (m nftMap) keyed(s string) bool {
	return slices.ContainsFunc(m.elems, func(e string) bool { return strings.HasPrefix(e, `["`+s+`",`) })
}

func (e *repairEnv) pickMap(ok func(nftMap) bool) (nftMap, bool) {
	for _, m := range e.base.maps {
		if ok(m) {
			return m, true
		}
	}
	return nftMap{}, false
}

func (e *repairEnv) mapNames() string {
	var s []string
	for _, m := range e.base.maps {
		s = append(s, fmt.Sprintf("%s (%d elements)", m.name, len(m.elems)))
	}
	return "verdict maps: " + strings.Join(s, ", ")
}

// readNft lists node n's table inet netloom (`nft -j`) as sorted lines
// that do not change with traffic: every chain with its hook, every rule
// with its chain and position, every set and map with its type, flags and
// sorted elements (left out for sets that packets fill), every other named
// object by name. Handles, counter values and expiry times are left out.
func readNft(n *demo.Node) (nftTable, error) {
	r := inNS(n.NS, nil, nil, "nft", "-j", "list", "table", "inet", "netloom")
	if r.err != nil {
		return nftTable{}, fmt.Errorf("nft list table inet netloom in %s: %v", n.NS, r)
	}
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		return nftTable{}, fmt.Errorf("nft -j list table inet netloom in %s: %v", n.NS, err)
	}
	var t nftTable
	rules := map[string]int{} // chain -> rules so far
	for _, item := range doc.Nftables {
		for kind, obj := range item {
			name, _ := obj["name"].(string)
			for _, k := range []string{"handle", "family", "table"} {
				delete(obj, k)
			}
			switch kind {
			case "metainfo", "table":
			case "rule":
				chain, _ := obj["chain"].(string)
				t.lines = append(t.lines, fmt.Sprintf("rule %s #%03d %s", chain, rules[chain], nftCanon(obj["expr"])))
				rules[chain]++
			case "chain":
				t.lines = append(t.lines, "chain "+name+" "+nftCanon(obj))
			case "set", "map":
				raw, _ := obj["elem"].([]any)
				delete(obj, "elem")
				var elems []string
				for _, el := range raw {
					elems = append(elems, nftCanon(el))
				}
				sort.Strings(elems)
				line := kind + " " + name + " " + nftCanon(obj)
				if flags := nftCanon(obj["flags"]); !strings.Contains(flags, "dynamic") && !strings.Contains(flags, "timeout") {
					line += " elements " + strings.Join(elems, ", ")
				}
				t.lines = append(t.lines, line)
				if v, _ := obj["map"].(string); kind == "map" && v == "verdict" {
					t.maps = append(t.maps, nftMap{name: name, elems: elems})
				}
			default: // counter, quota, limit, ct helper, ...
				t.lines = append(t.lines, kind+" "+name)
			}
		}
	}
	sort.Strings(t.lines)
	sort.Slice(t.maps, func(i, j int) bool { return t.maps[i].name < t.maps[j].name })
	return t, nil
}

// nftCanon is v as JSON (keys sorted) without the values that change by
// themselves: packet and byte counts, expiry times.
func nftCanon(v any) string {
	var strip func(any) any
	strip = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(v))
			for k, x := range v {
				if k == "packets" || k == "bytes" || k == "expires" || k == "handle" {
					continue
				}
				out[k] = strip(x)
			}
			return out
		case []any:
			out := make([]any, len(v))
			for i, x := range v {
				out[i] = strip(x)
			}
			return out
		}
		return v
	}
	b, err := json.Marshal(strip(v))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// clusterRoutes lists node n's IPv4 routes (every table) whose destination
// lies in or holds the cluster CIDR, sorted.
func clusterRoutes(n *demo.Node) ([]string, error) {
	r := inNS(n.NS, nil, nil, "ip", "-4", "-o", "route", "show", "table", "all")
	if r.err != nil {
		return nil, fmt.Errorf("ip route in %s: %v", n.NS, r)
	}
	cluster := netip.MustParsePrefix(clusterNet)
	var out []string
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "unreachable", "blackhole", "prohibit", "throw", "local", "broadcast", "anycast", "multicast", "unicast":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil || !p.Overlaps(cluster) {
			continue
		}
		out = append(out, strings.Join(f, " "))
	}
	sort.Strings(out)
	return out, nil
}
