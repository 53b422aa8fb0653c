package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/firewall/policy"
	networkingv1 "k8s.io/api/networking/v1"
)

const (
	polIngress = networkingv1.PolicyTypeIngress
	polEgress  = networkingv1.PolicyTypeEgress
)

// The pods of the matrix tests: namespaces x, y and z, each with pods on
// two or three nodes, two pods of x on one node, and the named port
// "serve" meaning 8080 on the a pods and 9090 on the others.
var polBaselinePods = []polPodSpec{
	{NS: "x", Name: "a", Node: 1, Labels: map[string]string{"app": "web"}, Serve: 8080},
	{NS: "x", Name: "b", Node: 1, Labels: map[string]string{"app": "db"}, Serve: 9090},
	{NS: "x", Name: "c", Node: 2, Labels: map[string]string{"app": "web"}, Serve: 9090},
	{NS: "y", Name: "a", Node: 2, Labels: map[string]string{"app": "web"}, Serve: 8080},
	{NS: "y", Name: "b", Node: 3, Labels: map[string]string{"app": "db"}, Serve: 9090},
	{NS: "z", Name: "a", Node: 3, Labels: map[string]string{"app": "web"}, Serve: 8080},
	{NS: "z", Name: "b", Node: 1, Labels: map[string]string{"app": "api"}, Serve: 9090},
}

var polBaselineNS = map[string]map[string]string{
	"x": {"team": "alpha", "env": "dev"},
	"y": {"team": "beta", "env": "prod"},
	"z": {"team": "beta", "env": "dev"},
}

// reset puts pod and namespace labels back to the baseline where a case
// changed them.
func (e *polEnv) reset() {
	e.t.Helper()
	var objs []any
	for _, ns := range polSortedKeys(polBaselineNS) {
		if !polMapsEqual(e.nsLabels[ns], polBaselineNS[ns]) {
			objs = append(objs, polNamespace(ns, polBaselineNS[ns]))
		}
	}
	for _, s := range polBaselinePods {
		if p := e.pod(s.key()); !polMapsEqual(p.Labels, s.Labels) {
			objs = append(objs, polPodObject(s))
		}
	}
	e.apply(objs...)
}

func polMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestPolicyMatrix applies NetworkPolicy cases to a 3-node cluster with
// pods of namespaces x, y and z and checks, for each, the full
// reachability matrix (every pod to every pod on TCP 80, 81, 8080, 9090
// and UDP 53, 81) by real connections against policy.Evaluate over the
// same objects, and `netloom policy trace` against both. Updates of a
// policy, of a pod's labels and of a namespace's labels in the middle of a
// case are followed within a bounded time.
func TestPolicyMatrix(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newPolEnv(t, 3, polBaselineNS, polBaselinePods)
	e.runMatrix(t)
}

// polCase is one case of the reachability matrix.
type polCase struct {
	name string
	run  func(t *testing.T, e *polEnv)
}

// runMatrix runs every case of the matrix on e (standalone, or Kubernetes
// mode: the objects go where e sends them).
func (e *polEnv) runMatrix(t *testing.T) {
	for _, c := range polCases() {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			start := time.Now()
			c.run(t, e)
			t.Logf("case %s took %s", c.name, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

func polCases() []polCase {
	return []polCase{
		{"NoPolicies", func(t *testing.T, e *polEnv) {
			e.setPolicies()
			e.converge(t)
		}},
		{"DenyAllIngress", func(t *testing.T, e *polEnv) {
			deny := polNP("y", "deny-all", polSel())
			deny.Spec.PolicyTypes = polTypes(polIngress)
			e.setPolicies(deny)
			e.converge(t)
			// y/a is isolated for ingress: its own node (node2) still
			// reaches it, node1 and node3 do not; y/a's own connections
			// out get their replies (the matrix's y rows).
			for _, n := range e.c.Nodes {
				e.checkNodeToPod(t, n, "y/a")
			}
			e.checkListed(t, "y/a", "y/deny-all", []string{"y/a", "y/b"}, func(c policyCounters) error {
				if c.Ingress.DroppedPackets == 0 {
					return fmt.Errorf("ingress droppedPackets 0 after dropped probes")
				}
				return nil
			})
		}},
		{"AllowSameNamespace", func(t *testing.T, e *polEnv) {
			p := polNP("x", "allow-same-ns", polSel())
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel()}}}}
			e.setPolicies(p)
			e.converge(t)
			e.checkListed(t, "x/a", "x/allow-same-ns", []string{"x/a", "x/b", "x/c"}, func(c policyCounters) error {
				if c.Ingress.AllowedPackets == 0 {
					return fmt.Errorf("ingress allowedPackets 0 after allowed connections")
				}
				if c.Ingress.DroppedPackets == 0 {
					return fmt.Errorf("ingress droppedPackets 0 after dropped probes")
				}
				return nil
			})
		}},
		{"NamespaceSelectorAndUpdates", func(t *testing.T, e *polEnv) {
			p := polNP("x", "from-beta", polSel("app", "web"))
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "beta")}}}}
			e.setPolicies(p)
			e.converge(t)

			t.Log("namespace z: team=beta -> team=gamma (z's pods lose x's web pods)")
			e.setNSLabels("z", map[string]string{"team": "gamma", "env": "dev"})
			e.converge(t)

			t.Log("pod x/b: app=db -> app=web (x/b becomes isolated)")
			e.setPodLabels("x/b", map[string]string{"app": "web"})
			e.converge(t)

			t.Log("policy x/from-beta: namespaceSelector team=beta -> env=dev, and port 80 only")
			p = p.DeepCopy()
			p.Spec.Ingress[0].From[0].NamespaceSelector = polSel("env", "dev")
			p.Spec.Ingress[0].Ports = []networkingv1.NetworkPolicyPort{{Port: polNum(80)}}
			e.setPolicies(p)
			e.converge(t)
		}},
		{"PodAndNamespaceSelector", func(t *testing.T, e *polEnv) {
			// One peer with both selectors: pods that match both.
			and := polNP("y", "and-peer", polSel("app", "db"))
			and.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: polSel("team", "alpha"), PodSelector: polSel("app", "web"),
			}}}}
			// Two peers: either.
			or := polNP("z", "or-peers", polSel("app", "web"))
			or.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: polSel("team", "alpha")},
				{PodSelector: polSel("app", "api")},
			}}}
			e.setPolicies(and, or)
			e.converge(t)
		}},
		{"IPBlockExcept", func(t *testing.T, e *polEnv) {
			// y's pods: from node1's pod subnet, except x/a.
			in := polNP("y", "from-node1-subnet", polSel())
			in.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: e.polSubnet("x/a").String(), Except: []string{e.polHost("x/a")}},
			}}}}
			// z's pods: to the cluster, except node2's pod subnet.
			out := polNP("z", "not-to-node2", polSel())
			out.Spec.PolicyTypes = polTypes(polEgress)
			out.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: clusterNet, Except: []string{e.polSubnet("y/a").String()}},
			}}}}
			e.setPolicies(in, out)
			e.converge(t)
			// Nodes are addresses, not pods: node1 talks to y's pods from
			// its pod subnet's gateway address, inside the ipBlock; node3
			// from its own, outside. z's pods may not leave the cluster
			// CIDR, except to their own node.
			for _, n := range e.c.Nodes {
				e.checkNodeToPod(t, n, "y/a")
				e.checkPodToNode(t, "z/b", n)
				e.checkPodToNode(t, "x/a", n)
			}

			t.Log("z/not-to-node2 also allows the nodes' underlay addresses")
			out = out.DeepCopy()
			out.Spec.Egress[0].To = append(out.Spec.Egress[0].To, networkingv1.NetworkPolicyPeer{
				IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(e.node(1).Addr, 24).Masked().String()},
			})
			e.setPolicies(in, out)
			e.converge(t)
			for _, n := range e.c.Nodes {
				e.checkPodToNode(t, "z/b", n)
			}
		}},
		{"NamedPorts", func(t *testing.T, e *polEnv) {
			// Ingress of x on "serve": 8080 on x/a, 9090 on x/b and x/c.
			in := polNP("x", "serve-only", polSel())
			in.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: polName("serve")}}}}
			// Egress of z's web pods to the destination's "serve" and "dns".
			out := polNP("z", "to-serve", polSel("app", "web"))
			out.Spec.PolicyTypes = polTypes(polEgress)
			out.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: polName("serve")}, {Protocol: polUDP(), Port: polName("dns")},
			}}}
			e.setPolicies(in, out)
			e.converge(t)

			t.Log("pod x/c's serve port is 9090; relabelled pods keep their ports, and a policy now names http")
			in = in.DeepCopy()
			in.Spec.Ingress[0].Ports = append(in.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: polName("http")})
			e.setPolicies(in, out)
			e.converge(t)
		}},
		{"EndPort", func(t *testing.T, e *polEnv) {
			end81, end60 := int32(81), int32(60)
			p := polNP("y", "ranges", polSel())
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Protocol: polTCP(), Port: polNum(80), EndPort: &end81},
				{Protocol: polUDP(), Port: polNum(50), EndPort: &end60},
			}}}
			e.setPolicies(p)
			e.converge(t)
		}},
		{"EgressDenyWithAllowance", func(t *testing.T, e *polEnv) {
			p := polNP("x", "dns-to-y-only", polSel())
			p.Spec.PolicyTypes = polTypes(polEgress)
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel(policy.NamespaceNameLabel, "y")}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: polUDP(), Port: polNum(53)}},
			}}
			e.setPolicies(p)
			e.converge(t)
		}},
		{"IngressAndEgress", func(t *testing.T, e *polEnv) {
			// policyTypes omitted: egress rules make it an egress policy too.
			p := polNP("z", "both", polSel("app", "web"))
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "alpha")}}}}
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("env", "prod")}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: polNum(80)}, {Protocol: polUDP(), Port: polNum(81)}},
			}}
			// and an ingress policy on the egress side's destinations
			q := polNP("y", "web-from-z", polSel("app", "web"))
			q.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel(policy.NamespaceNameLabel, "z")}}}}
			e.setPolicies(p, q)
			e.converge(t)
		}},
		{"PolicyTypesDefaulting", func(t *testing.T, e *polEnv) {
			// Ingress rules only, no policyTypes: an ingress policy.
			a := polNP("y", "ingress-rules", polSel("app", "web"))
			a.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel()}}}}
			// Egress rules only, no policyTypes: ingress (no rules: deny
			// all) and egress.
			b := polNP("y", "egress-rules", polSel("app", "db"))
			b.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel()}}}}
			// policyTypes Egress with ingress rules: the ingress rules do
			// not count, and no egress rule: deny all egress.
			c := polNP("z", "egress-type-only", polSel())
			c.Spec.PolicyTypes = polTypes(polEgress)
			c.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel()}}}}
			e.setPolicies(a, b, c)
			e.converge(t)
		}},
		{"MultiplePoliciesUnion", func(t *testing.T, e *polEnv) {
			u1 := polNP("y", "u1-web-from-x", polSel("app", "web"))
			u1.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel(policy.NamespaceNameLabel, "x")}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: polNum(80)}},
			}}
			u2 := polNP("y", "u2-all-from-z", polSel())
			u2.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel(policy.NamespaceNameLabel, "z")}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: polNum(81)}},
			}}
			u3 := polNP("y", "u3-web-dns", polSel("app", "web"))
			u3.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: polUDP(), Port: polNum(53)}}},
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel("app", "db")}}},
			}
			e.setPolicies(u1, u2, u3)
			e.converge(t)

			t.Log("delete u1: x loses y/a's port 80")
			e.setPolicies(u2, u3)
			e.converge(t)
		}},
		{"UDPvsTCP", func(t *testing.T, e *polEnv) {
			p := polNP("z", "udp-81", polSel())
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: polUDP(), Port: polNum(81)}}}}
			q := polNP("x", "tcp-53-not-udp", polSel())
			q.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(53)}, {Port: polNum(81)}}}}
			e.setPolicies(p, q)
			e.converge(t)
		}},
		{"TraceOwnNodeTraffic", func(t *testing.T, e *polEnv) {
			// Traffic between a pod and its own node passes whatever the
			// policies (the output and input hooks, which policy does not
			// filter; Kubernetes: "traffic to and from the node where a
			// Pod is running is always allowed"). `policy trace` promises
			// to say what the kernel does, so it must say so too.
			traceOwnNode = true
			defer func() { traceOwnNode = false }()
			in := polNP("y", "deny-all", polSel())
			in.Spec.PolicyTypes = polTypes(polIngress)
			out := polNP("z", "deny-all-egress", polSel())
			out.Spec.PolicyTypes = polTypes(polEgress)
			e.setPolicies(in, out)
			e.converge(t)
			e.checkNodeToPod(t, e.nodeOf(e.pod("y/a")), "y/a")
			e.checkPodToNode(t, "z/b", e.nodeOf(e.pod("z/b")))
		}},
		{"NewPodFilteredFromFirstPacket", func(t *testing.T, e *polEnv) { e.checkNewPod(t) }},
	}
}

// checkNewPod: a pod that attaches while a policy selecting it is in
// force is filtered from its first packet. Its Pod object (labels) is
// stored before the CNI ADD, as the API server has it before the kubelet
// runs the plugin; right after the ADD returns, a server starts in it and
// connections are tried every 10 ms, to it and from it, for 2 s. None
// may pass.
func (e *polEnv) checkNewPod(t *testing.T) {
	t.Helper()
	deny := polNP("y", "deny-web", polSel("app", "web"))
	deny.Spec.PolicyTypes = polTypes(polIngress, polEgress)
	e.setPolicies(deny)
	e.converge(t)

	spec := polPodSpec{NS: "y", Name: "new-" + randHex(2), Node: 2, Labels: map[string]string{"app": "web"}, Serve: 8080}
	e.apply(polPodObject(spec))
	for _, n := range e.c.Nodes {
		eventually(t, 20*time.Second, "Pod object y/"+spec.Name+" on "+n.Name, func() error {
			pods, err := e.getList(n, "pods")
			if err != nil {
				return err
			}
			if p := find(pods, "y", spec.Name); p == nil || labelsOf(p)["app"] != "web" {
				return fmt.Errorf("%s does not list pod y/%s with app=web", n.Name, spec.Name)
			}
			return nil
		})
	}
	dp := e.attach(spec)
	attached := time.Now()
	np := &polPod{polPodSpec: spec, Pod: dp}
	polServe(t, np)
	t.Cleanup(func() {
		if err := e.c.DelPod(context.Background(), dp); err != nil {
			t.Errorf("delete pod y/%s: %v", spec.Name, err)
		}
		if e.kube != nil {
			e.kube.del(t, polPodObject(spec))
		}
	})
	xa := e.pod("x/a")
	type leak struct {
		what string
		at   time.Duration
	}
	var mu sync.Mutex
	var leaks []leak
	var tries int
	var wg sync.WaitGroup
	for time.Since(attached) < 2*time.Second {
		for _, dir := range []struct {
			what string
			ns   string
			dst  netip.Addr
			ans  string
		}{
			{"x/a -> y/" + spec.Name, xa.Pod.NS, dp.IP, np.key() + " 80/tcp"},
			{"y/" + spec.Name + " -> x/a", dp.NS, xa.Pod.IP, "x/a 80/tcp"},
		} {
			wg.Add(1)
			tries++
			go func() {
				defer wg.Done()
				at := time.Since(attached)
				ans, err := polProbe(dir.ns, dir.dst, polPort{policy.TCP, 80}, 300*time.Millisecond)
				if err == nil && ans == dir.ans {
					mu.Lock()
					leaks = append(leaks, leak{dir.what, at})
					mu.Unlock()
				}
			}()
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if len(leaks) > 0 {
		slices.SortFunc(leaks, func(a, b leak) int { return int(a.at - b.at) })
		var s []string
		for _, l := range leaks {
			s = append(s, fmt.Sprintf("%s at %s", l.what, l.at.Round(time.Millisecond)))
		}
		t.Errorf("pod y/%s (selected by y/deny-web before it attached) passed %d of %d connections in its first 2 s after the CNI ADD, want none:\n  %s",
			spec.Name, len(leaks), tries, strings.Join(s, "\n  "))
	} else {
		t.Logf("pod y/%s: %d connections to and from it in its first 2 s after the CNI ADD, none passed", spec.Name, tries)
	}
}

// policyCounters is status.counters of a listed NetworkPolicy.
type policyCounters struct {
	Node    string `json:"node"`
	Ingress struct {
		AllowedPackets, DroppedPackets uint64
	} `json:"ingress"`
	Egress struct {
		AllowedPackets, DroppedPackets uint64
	} `json:"egress"`
}

// checkListed reads `netloom get networkpolicies -o json` on the node of
// pod podKey and checks that policy key selects want and that its
// counters satisfy check.
func (e *polEnv) checkListed(t *testing.T, podKey, key string, want []string, check func(policyCounters) error) {
	t.Helper()
	n := e.nodeOf(e.pod(podKey))
	eventually(t, 10*time.Second, "netloom get networkpolicies on "+n.Name+" shows "+key, func() error {
		items, err := e.getList(n, "networkpolicies")
		if err != nil {
			return err
		}
		ns, name, _ := strings.Cut(key, "/")
		it := find(items, ns, name)
		if it == nil {
			return fmt.Errorf("%s not listed", key)
		}
		raw, _ := json.Marshal(it["status"])
		var st struct {
			SelectedPods []string       `json:"selectedPods"`
			Counters     policyCounters `json:"counters"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("status of %s: %v: %s", key, err, raw)
		}
		if !slices.Equal(st.SelectedPods, want) {
			return fmt.Errorf("%s selects %v, want %v", key, st.SelectedPods, want)
		}
		if st.Counters.Node != n.Name {
			return fmt.Errorf("%s counters of node %q, want %s", key, st.Counters.Node, n.Name)
		}
		if err := check(st.Counters); err != nil {
			return fmt.Errorf("%s counters on %s %+v: %v", key, n.Name, st.Counters, err)
		}
		t.Logf("netloom get networkpolicies on %s: %s selects %v, counters %+v", n.Name, key, st.SelectedPods, st.Counters)
		return nil
	})
}

// TestPolicyUpdateUnderTraffic installs about a thousand policies, then,
// while a client opens 20 short TCP connections a second to a server for
// 20 seconds (a flow allowed by the client's egress policy and the
// server's ingress policy, on different nodes), adds, removes and changes
// hundreds of policies, some selecting the server or the client, and
// relabels other pods and a namespace. No connection of the allowed flow
// may fail, and two denied flows (another pod to the server; the client to
// another port) must stay denied throughout.
func TestPolicyUpdateUnderTraffic(t *testing.T) {
	needRoot(t)
	t.Parallel()
	e := newPolEnv(t, 2,
		map[string]map[string]string{"app": {"team": "app"}, "bulk": {"team": "bulk"}},
		[]polPodSpec{
			{NS: "app", Name: "client", Node: 1, Labels: map[string]string{"role": "client"}, Serve: 8080},
			{NS: "app", Name: "server", Node: 2, Labels: map[string]string{"role": "server"}, Serve: 8080},
			{NS: "app", Name: "intruder", Node: 1, Labels: map[string]string{"role": "intruder"}, Serve: 8080},
			{NS: "bulk", Name: "p1", Node: 1, Labels: map[string]string{"app": "bulk-0"}, Serve: 8080},
			{NS: "bulk", Name: "p2", Node: 2, Labels: map[string]string{"app": "bulk-1"}, Serve: 9090},
		})

	denyAll := polNP("app", "deny-all", polSel())
	denyAll.Spec.PolicyTypes = polTypes(polIngress, polEgress)
	allowIn := polNP("app", "server-from-client", polSel("role", "server"))
	allowIn.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: polSel("role", "client")}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(80)}},
	}}
	allowOut := polNP("app", "client-to-server", polSel("role", "client"))
	allowOut.Spec.PolicyTypes = polTypes(polEgress)
	allowOut.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
		To:    []networkingv1.NetworkPolicyPeer{{PodSelector: polSel("role", "server")}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(80)}},
	}}
	base := polBulk("bulk", "base", 1000, 0)
	start := time.Now()
	e.apply(append(polObjs(base), denyAll, allowIn, allowOut)...)
	t.Logf("applied %d policies in %s", len(e.policies), time.Since(start).Round(time.Millisecond))

	flow := polCell{"app/client", "app/server", polPort{policy.TCP, 80}}
	intruder := polCell{"app/intruder", "app/server", polPort{policy.TCP, 80}}
	otherPort := polCell{"app/client", "app/server", polPort{policy.TCP, 81}}
	e.waitTraceCells(t, 60*time.Second, []polCell{flow, intruder, otherPort})
	want, _ := e.expected()
	if !want[flow].Allowed || want[intruder].Allowed || want[otherPort].Allowed {
		t.Fatalf("the test's policies are wrong: Evaluate says %s / %s / %s", want[flow].Reason, want[intruder].Reason, want[otherPort].Reason)
	}
	e.checkMatrix(t, 30*time.Second)

	// Traffic: the allowed flow 20 times a second, the denied flows 5
	// times a second each.
	type outcome struct {
		at  time.Duration
		ok  bool
		err error
		dur time.Duration
	}
	var mu sync.Mutex
	var allowed, denied []outcome
	var deniedCells []polCell
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	run := func(c polCell, every, timeout time.Duration, record func(outcome)) {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		var inner sync.WaitGroup
		defer inner.Wait()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			inner.Add(1)
			go func() {
				defer inner.Done()
				at := time.Since(t0)
				ok, err := e.probeOne(c, timeout)
				record(outcome{at: at, ok: ok, err: err, dur: time.Since(t0) - at})
			}()
		}
	}
	wg.Add(3)
	go run(flow, 50*time.Millisecond, 3*time.Second, func(o outcome) { mu.Lock(); allowed = append(allowed, o); mu.Unlock() })
	for _, c := range []polCell{intruder, otherPort} {
		go run(c, 200*time.Millisecond, time.Second, func(o outcome) {
			mu.Lock()
			denied = append(denied, o)
			deniedCells = append(deniedCells, c)
			mu.Unlock()
		})
	}

	var marks []string
	mark := func(s string) {
		marks = append(marks, fmt.Sprintf("%6.2fs %s", time.Since(t0).Seconds(), s))
		t.Logf("%6.2fs %s", time.Since(t0).Seconds(), s)
	}
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(t0.Add(d))) }

	extra := polBulk("bulk", "extra", 300, 7)
	sleepUntil(time.Second)
	mark("apply 300 more bulk policies")
	e.apply(polObjs(extra)...)
	sleepUntil(4 * time.Second)
	mark("delete 300 of the first bulk policies")
	e.del(polObjs(base[:300])...)
	sleepUntil(7 * time.Second)
	mark("apply 100 policies selecting the server and 100 selecting the client (other peers and ports)")
	var around []*networkingv1.NetworkPolicy
	for i := range 100 {
		in := polNP("app", fmt.Sprintf("server-extra-%03d", i), polSel("role", "server"))
		in.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "bulk")}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(10000 + i)}},
		}}
		out := polNP("app", fmt.Sprintf("client-extra-%03d", i), polSel("role", "client"))
		out.Spec.PolicyTypes = polTypes(polEgress)
		out.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "bulk")}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(10000 + i)}},
		}}
		around = append(around, in, out)
	}
	e.apply(polObjs(around)...)
	sleepUntil(10 * time.Second)
	mark("relabel the bulk pods and the bulk namespace")
	e.apply(
		polPodObject(polPodSpec{NS: "bulk", Name: "p1", Labels: map[string]string{"app": "bulk-2"}, Serve: 8080}),
		polPodObject(polPodSpec{NS: "bulk", Name: "p2", Labels: map[string]string{"app": "bulk-3"}, Serve: 9090}),
		polNamespace("bulk", map[string]string{"team": "bulk2"}),
	)
	sleepUntil(13 * time.Second)
	mark("delete the 200 policies selecting the server and the client")
	e.del(polObjs(around)...)
	sleepUntil(15 * time.Second)
	mark("apply the 300 deleted bulk policies again, changed")
	e.apply(polObjs(polBulk("bulk", "base", 300, 3))...)
	sleepUntil(20 * time.Second)
	mark("traffic stops")
	close(stop)
	wg.Wait()

	// The end state is what Evaluate says, too.
	e.waitTraceCells(t, 60*time.Second, []polCell{flow, intruder, otherPort})
	e.checkMatrix(t, 30*time.Second)

	var failed []string
	var slowest time.Duration
	for _, o := range allowed {
		slowest = max(slowest, o.dur)
		if !o.ok {
			failed = append(failed, fmt.Sprintf("at %.2fs: no connection (%v)", o.at.Seconds(), o.err))
		}
	}
	var leaked []string
	for i, o := range denied {
		if o.ok || o.err != nil {
			leaked = append(leaked, fmt.Sprintf("%s at %.2fs: connected=%v err=%v", deniedCells[i], o.at.Seconds(), o.ok, o.err))
		}
	}
	t.Logf("allowed flow %s: %d connections, %d failed, slowest %s; denied flows: %d attempts, %d connected; %d policies at the end",
		flow, len(allowed), len(failed), slowest.Round(time.Millisecond), len(denied), len(leaked), len(e.policies))
	if len(allowed) < 300 {
		t.Errorf("only %d connections of the allowed flow were made in 20 s, want about 400", len(allowed))
	}
	if len(failed) > 0 {
		t.Errorf("%d connections of the allowed flow failed while policies changed:\n  %s\ntimeline:\n  %s", len(failed), strings.Join(failed, "\n  "), strings.Join(marks, "\n  "))
	}
	if len(leaked) > 0 {
		t.Errorf("denied flows connected while policies changed:\n  %s\ntimeline:\n  %s", strings.Join(leaked, "\n  "), strings.Join(marks, "\n  "))
	}
}
