package integration

// Helpers of the NetworkPolicy tests: a cluster of pods in namespaces x, y
// and z with servers on every probed port, manifests built from typed
// objects (the same objects the expected verdicts are computed from), a
// reachability matrix measured by real connections and one computed by
// firewall/policy.Evaluate, and `netloom policy trace` as a third opinion.
// Every name here starts with "pol" so that it stays apart from the other
// tests' helpers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// polPort is a probed destination port.
type polPort struct {
	Proto policy.Protocol
	Port  uint16
}

func (p polPort) String() string {
	return fmt.Sprintf("%d/%s", p.Port, strings.ToLower(string(p.Proto)))
}

// polProbePorts are probed between every pair of pods; every pod serves
// all of them. Port 8080 and 9090 are both served everywhere, while the
// named port "serve" means 8080 on some pods and 9090 on others.
var polProbePorts = []polPort{
	{policy.TCP, 80}, {policy.TCP, 81}, {policy.TCP, 8080}, {policy.TCP, 9090},
	{policy.UDP, 53}, {policy.UDP, 81},
}

// polPodSpec describes one pod of a policy test.
type polPodSpec struct {
	NS, Name string
	Node     int // 1-based
	Labels   map[string]string
	Serve    uint16 // the number of the named port "serve"
}

func (s polPodSpec) key() string { return s.NS + "/" + s.Name }

// polPod is an attached pod and what the test last applied for it.
type polPod struct {
	polPodSpec
	Pod *demo.Pod
}

// polEnv is a cluster with pods in several namespaces, the objects the test
// applied (namespace labels, pod labels, policies) and the servers.
type polEnv struct {
	*tc
	pods     []*polPod
	nsLabels map[string]map[string]string
	policies map[string]*networkingv1.NetworkPolicy // "ns/name" -> policy as applied
	clients  map[string]*api.Client                 // node name -> API client
	applied  *int                                   // applies so far, to rotate the node applying
	// kube, when set, is the API server the objects go to (Kubernetes
	// mode) instead of `netloom apply`.
	kube *kubeEnv
}

// with returns e bound to t (a subtest): the state is shared.
func (e *polEnv) with(t *testing.T) *polEnv {
	c := *e
	c.tc = e.tc.with(t)
	return &c
}

// newPolEnv builds a cluster of nodes, starts it, attaches pods (by
// K8S_POD_NAMESPACE and name), applies the Namespace objects with
// nsLabels and a Pod object per pod (labels, container ports), and starts
// servers on every probed port in every pod.
func newPolEnv(t *testing.T, nodes int, nsLabels map[string]map[string]string, specs []polPodSpec) *polEnv {
	t.Helper()
	x := newCluster(t, demo.Options{Nodes: nodes, PodsPerNode: -1})
	if err := x.c.StartAgents(context.Background()); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	x.waitReady()
	return setupPolEnv(t, x, nil, nsLabels, specs)
}

// setupPolEnv attaches the pods of specs on the running cluster x, gives
// them and their namespaces their objects, and starts the servers. With
// kube the objects go to the API server first (a pod must exist there
// before the kubelet runs the CNI ADD, and its namespace before it);
// without, the pods attach first and `netloom apply` stores the objects.
func setupPolEnv(t *testing.T, x *tc, kube *kubeEnv, nsLabels map[string]map[string]string, specs []polPodSpec) *polEnv {
	t.Helper()
	e := &polEnv{tc: x, applied: new(int), nsLabels: map[string]map[string]string{}, policies: map[string]*networkingv1.NetworkPolicy{}, clients: map[string]*api.Client{}, kube: kube}
	for _, n := range x.c.Nodes {
		e.clients[n.Name] = api.NewClient(n.Socket)
	}
	var nsObjs, podObjs []any
	for _, ns := range polSortedKeys(nsLabels) {
		e.nsLabels[ns] = polCopy(nsLabels[ns])
		nsObjs = append(nsObjs, polNamespace(ns, nsLabels[ns]))
	}
	for _, s := range specs {
		podObjs = append(podObjs, polPodObject(s))
	}
	if kube != nil {
		e.apply(nsObjs...)
		e.apply(podObjs...)
	}
	for _, s := range specs {
		s.Labels = polCopy(s.Labels)
		e.pods = append(e.pods, &polPod{polPodSpec: s, Pod: e.attach(s)})
	}
	if kube == nil {
		e.apply(append(nsObjs, podObjs...)...)
	}
	for _, p := range e.pods {
		polServe(t, p)
	}
	for _, n := range x.c.Nodes {
		polServeNode(t, n)
	}
	return e
}

// attach runs the CNI ADD of pod s on its node, as the kubelet does: in
// Kubernetes mode with the UID of its Pod object (which must exist), and
// then it writes the pod's status (address, Ready) as the kubelet would.
func (e *polEnv) attach(s polPodSpec) *demo.Pod {
	e.t.Helper()
	ctx := context.Background()
	n := e.node(s.Node)
	if e.kube == nil {
		p, err := e.c.AddPodIn(ctx, n, s.NS, s.Name)
		if err != nil {
			e.t.Fatalf("add pod %s: %v", s.key(), err)
		}
		return p
	}
	return e.kube.attach(e.tc, n, s.NS, s.Name)
}

func polCopy(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func polSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// pod returns the pod "ns/name".
func (e *polEnv) pod(key string) *polPod {
	e.t.Helper()
	for _, p := range e.pods {
		if p.key() == key {
			return p
		}
	}
	e.t.Fatalf("no pod %s in this test", key)
	return nil
}

// nodeOf returns the demo node a pod runs on.
func (e *polEnv) nodeOf(p *polPod) *demo.Node { return e.node(p.Node) }

// ---- objects and manifests ----

func polNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
}

// polPodObject is the Pod object of a pod: its labels and the named
// container ports http (TCP 80), serve (TCP 8080 or 9090) and dns (UDP 53).
func polPodObject(s polPodSpec) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: s.NS, Name: s.Name, Labels: s.Labels},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", s.Node), Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1",
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
				{Name: "serve", ContainerPort: int32(s.Serve), Protocol: corev1.ProtocolTCP},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			},
		}}},
	}
}

// polManifest renders objects as a JSON List for `netloom apply -f -`,
// without the empty fields a typed object marshals (status,
// creationTimestamp).
func polManifest(objs ...any) []byte {
	items := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			panic(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			panic(err)
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		b, _ = json.Marshal(m)
		items = append(items, b)
	}
	b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	return b
}

// applyNode picks the node that runs the next apply: they take turns, so
// that objects travel by gossip to the others.
func (e *polEnv) applyNode() *demo.Node {
	n := e.c.Nodes[*e.applied%len(e.c.Nodes)]
	*e.applied++
	return n
}

// apply runs `netloom apply -f -` with objs on the next node and records
// what was applied.
func (e *polEnv) apply(objs ...any) {
	e.t.Helper()
	if len(objs) == 0 {
		return
	}
	if e.kube != nil {
		e.kube.apply(e.t, objs...)
		e.record(objs, false)
		return
	}
	n := e.applyNode()
	if r := e.cli(n, polManifest(objs...), "apply", "-f", "-"); r.err != nil {
		e.t.Fatalf("netloom apply on %s: %v", n.Name, r)
	}
	e.record(objs, false)
}

// del runs `netloom delete -f -` with objs on the next node.
func (e *polEnv) del(objs ...any) {
	e.t.Helper()
	if len(objs) == 0 {
		return
	}
	if e.kube != nil {
		e.kube.del(e.t, objs...)
		e.record(objs, true)
		return
	}
	n := e.applyNode()
	if r := e.cli(n, polManifest(objs...), "delete", "-f", "-"); r.err != nil {
		e.t.Fatalf("netloom delete on %s: %v", n.Name, r)
	}
	e.record(objs, true)
}

func (e *polEnv) record(objs []any, deleted bool) {
	for _, o := range objs {
		switch v := o.(type) {
		case *networkingv1.NetworkPolicy:
			if deleted {
				delete(e.policies, policy.PolicyKey(v))
			} else {
				e.policies[policy.PolicyKey(v)] = v.DeepCopy()
			}
		case *corev1.Namespace:
			if !deleted {
				e.nsLabels[v.Name] = polCopy(v.Labels)
			}
		case *corev1.Pod:
			for _, p := range e.pods {
				if p.NS == v.Namespace && p.Name == v.Name && !deleted {
					p.Labels = polCopy(v.Labels)
				}
			}
		}
	}
}

// setPolicies makes pols the cluster's whole policy set: policies of
// earlier steps that are not in pols are deleted, pols are applied.
func (e *polEnv) setPolicies(pols ...*networkingv1.NetworkPolicy) {
	e.t.Helper()
	keep := map[string]bool{}
	for _, p := range pols {
		keep[policy.PolicyKey(p)] = true
	}
	var gone []any
	for _, k := range polSortedKeys(e.policies) {
		if !keep[k] {
			gone = append(gone, e.policies[k])
		}
	}
	e.del(gone...)
	objs := make([]any, len(pols))
	for i, p := range pols {
		objs[i] = p
	}
	e.apply(objs...)
}

// setPodLabels applies pod key's Pod object with new labels.
func (e *polEnv) setPodLabels(key string, labels map[string]string) {
	e.t.Helper()
	s := e.pod(key).polPodSpec
	s.Labels = labels
	e.apply(polPodObject(s))
}

// setNSLabels applies the Namespace object of ns with new labels.
func (e *polEnv) setNSLabels(ns string, labels map[string]string) {
	e.t.Helper()
	e.apply(polNamespace(ns, labels))
}

// snapshot is what the policy decisions depend on, built from what the
// test applied and where the pods attached.
func (e *polEnv) snapshot() *policy.Snapshot {
	s := &policy.Snapshot{Namespaces: map[string]map[string]string{}}
	for ns, l := range e.nsLabels {
		s.Namespaces[ns] = polCopy(l)
	}
	for _, p := range e.pods {
		s.Pods = append(s.Pods, policy.Pod{
			Namespace: p.NS, Name: p.Name, IP: p.Pod.IP, Node: p.Pod.Node, Labels: polCopy(p.Labels),
			Ports: []policy.NamedPort{
				{Name: "http", Port: 80, Protocol: policy.TCP},
				{Name: "serve", Port: p.Serve, Protocol: policy.TCP},
				{Name: "dns", Port: 53, Protocol: policy.UDP},
			},
		})
	}
	for _, k := range polSortedKeys(e.policies) {
		s.Policies = append(s.Policies, e.policies[k].DeepCopy())
	}
	return s
}

// ---- network namespaces, servers and probes ----

// polServe starts, in the test process, servers in pod p's namespace on
// every probed port. Each answers a TCP connection or a UDP datagram with
// one line "<ns/name> <port/proto>", so a probe knows whom it reached.
// They stop at the end of the test (before the cluster goes).
func polServe(t *testing.T, p *polPod) {
	t.Helper()
	var lns []net.Listener
	var pcs []net.PacketConn
	err := demo.Do(p.Pod.NS, func() error {
		for _, pp := range polProbePorts {
			addr := fmt.Sprintf(":%d", pp.Port)
			if pp.Proto == policy.UDP {
				pc, err := net.ListenPacket("udp4", addr)
				if err != nil {
					return err
				}
				pcs = append(pcs, pc)
				continue
			}
			ln, err := net.Listen("tcp4", addr)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("servers in pod %s: %v", p.key(), err)
	}
	var wg sync.WaitGroup
	for _, ln := range lns {
		port := ln.Addr().(*net.TCPAddr).Port
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %d/tcp\n", p.key(), port)
				c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		port := pc.LocalAddr().(*net.UDPAddr).Port
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(fmt.Sprintf("%s %d/udp\n", p.key(), port)), from)
			}
		}()
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
		wg.Wait()
	})
}

// polServeNode starts a TCP server on port 80 in node n's namespace that
// answers "node/<name> 80/tcp", for probes from pods to a node.
func polServeNode(t *testing.T, n *demo.Node) {
	t.Helper()
	var ln net.Listener
	if err := demo.Do(n.NS, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":80")
		return err
	}); err != nil {
		t.Fatalf("server in node %s: %v", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "node/%s 80/tcp\n", n.Name)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// polErrNoAnswer is a probe that got no answer in time: what a drop looks
// like.
var polErrNoAnswer = errors.New("no answer")

// polProbe connects from network namespace ns to dst on port and returns
// the server's one-line answer. A TCP connection that is not accepted in
// timeout, or a UDP datagram not answered in timeout, gives polErrNoAnswer.
func polProbe(ns string, dst netip.Addr, port polPort, timeout time.Duration) (string, error) {
	addr := netip.AddrPortFrom(dst, port.Port).String()
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	err := demo.Do(ns, func() error {
		var err error
		if port.Proto == policy.UDP {
			conn, err = net.Dial("udp4", addr)
		} else {
			d := net.Dialer{Deadline: deadline}
			conn, err = d.Dial("tcp4", addr)
		}
		return err
	})
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", polErrNoAnswer
		}
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	if port.Proto == policy.UDP {
		if _, err := conn.Write([]byte("probe\n")); err != nil {
			return "", err
		}
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "", polErrNoAnswer
			}
			return "", err
		}
		return strings.TrimSpace(string(buf[:n])), nil
	}
	b, err := io.ReadAll(conn)
	if err != nil && len(b) == 0 {
		return "", fmt.Errorf("connected, then: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ---- reachability matrices ----

// polCell is one probe: from pod Src to pod Dst on Port.
type polCell struct {
	Src, Dst string // "ns/name"
	Port     polPort
}

func (c polCell) String() string { return fmt.Sprintf("%s -> %s %s", c.Src, c.Dst, c.Port) }

// polCells lists every pair of pods (a pod to itself too) on every probed
// port, in a stable order.
func (e *polEnv) polCells() []polCell {
	var out []polCell
	for _, s := range e.pods {
		for _, d := range e.pods {
			for _, pp := range polProbePorts {
				out = append(out, polCell{s.key(), d.key(), pp})
			}
		}
	}
	return out
}

func (e *polEnv) packet(c polCell) policy.Packet {
	return policy.Packet{Src: e.pod(c.Src).Pod.IP, Dst: e.pod(c.Dst).Pod.IP, Protocol: c.Port.Proto, Port: c.Port.Port}
}

// expected computes the verdict of every cell with policy.Evaluate over
// the snapshot of what the test applied.
func (e *polEnv) expected() (map[polCell]policy.Decision, *policy.Snapshot) {
	s := e.snapshot()
	ev := policy.NewEvaluator(s)
	out := map[polCell]policy.Decision{}
	for _, c := range e.polCells() {
		out[c] = ev.Evaluate(e.packet(c))
	}
	return out, s
}

// probeOne measures one cell: true when the right server answered.
func (e *polEnv) probeOne(c polCell, timeout time.Duration) (bool, error) {
	src, dst := e.pod(c.Src), e.pod(c.Dst)
	ans, err := polProbe(src.Pod.NS, dst.Pod.IP, c.Port, timeout)
	if errors.Is(err, polErrNoAnswer) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if want := fmt.Sprintf("%s %s", dst.key(), c.Port); ans != want {
		return false, fmt.Errorf("answer %q, want %q", ans, want)
	}
	return true, nil
}

// probeAll measures cells concurrently.
func (e *polEnv) probeAll(cells []polCell, timeout time.Duration) (map[polCell]bool, map[polCell]error) {
	got := make(map[polCell]bool, len(cells))
	errs := map[polCell]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for _, c := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok, err := e.probeOne(c, timeout)
			mu.Lock()
			got[c] = ok
			if err != nil {
				errs[c] = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got, errs
}

// polProbeTimeout bounds one probe. Allowed connections here are answered
// in milliseconds; a probe that times out is retried before it counts.
const polProbeTimeout = 1500 * time.Millisecond

// checkMatrix checks the full reachability matrix against Evaluate. The
// verdicts must be in force within bound: a cell that differs is probed
// again until it agrees or bound has passed (a new verdict reaches the
// kernel a moment after the store; an allowed connection may lose a
// packet); a cell still differing then is an error naming both verdicts
// and the trace. It returns how long the matrix took to agree.
func (e *polEnv) checkMatrix(t *testing.T, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	want, _ := e.expected()
	cells := e.polCells()
	got, errs := e.probeAll(cells, polProbeTimeout)
	allowed := 0
	for _, c := range cells {
		if want[c].Allowed {
			allowed++
		}
	}
	diff := func() []polCell {
		var d []polCell
		for _, c := range cells {
			if got[c] != want[c].Allowed || errs[c] != nil {
				d = append(d, c)
			}
		}
		return d
	}
	bad := diff()
	firstPass := len(bad)
	for len(bad) > 0 && time.Since(start) < bound {
		time.Sleep(300 * time.Millisecond)
		g, er := e.probeAll(bad, 2*polProbeTimeout)
		for _, c := range bad {
			got[c] = g[c]
			if er[c] != nil {
				errs[c] = er[c]
			} else {
				delete(errs, c)
			}
		}
		bad = diff()
	}
	took := time.Since(start)
	t.Logf("matrix: %d cells (%d pods x %d pods x %d ports), %d allowed, %d denied; %d cells differed in the first pass; agreed with Evaluate after %s",
		len(cells), len(e.pods), len(e.pods), len(polProbePorts), allowed, len(cells)-allowed, firstPass, took.Round(10*time.Millisecond))
	if len(bad) == 0 {
		return took
	}
	for i, c := range bad {
		if i == 20 {
			t.Errorf("... and %d more cells differ", len(bad)-20)
			break
		}
		what := "connected"
		if !got[c] {
			what = "no connection"
		}
		if errs[c] != nil {
			what += " (" + errs[c].Error() + ")"
		}
		tr := e.traceText(e.nodeOf(e.pod(c.Src)), c)
		t.Errorf("%s: %s, but Evaluate says %s\n    trace on %s: %s", c, what, want[c].Reason, e.pod(c.Src).Pod.Node, tr)
	}
	t.Log(e.matrixText(got))
	return took
}

// matrixText renders a measured matrix, one line per source and port:
// "." connected, "x" no connection.
func (e *polEnv) matrixText(got map[polCell]bool) string {
	var b strings.Builder
	b.WriteString("measured matrix (. = connected, x = no connection), columns:")
	for _, d := range e.pods {
		b.WriteString(" " + d.key())
	}
	b.WriteString("\n")
	for _, s := range e.pods {
		for _, pp := range polProbePorts {
			fmt.Fprintf(&b, "  %-5s %-8s", s.key(), pp)
			for _, d := range e.pods {
				if got[polCell{s.key(), d.key(), pp}] {
					b.WriteString(" .")
				} else {
					b.WriteString(" x")
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// ---- policy trace ----

// trace asks node n's agent (API) for the trace of a cell.
func (e *polEnv) trace(n *demo.Node, c polCell) (api.TraceResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp api.TraceResponse
	err := e.clients[n.Name].Do(ctx, "POST", api.PathTrace, api.TraceRequest{Src: c.Src, Dst: c.Dst, Port: c.Port.String()}, &resp)
	return resp, err
}

func (e *polEnv) traceText(n *demo.Node, c polCell) string {
	r, err := e.trace(n, c)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("allowed=%v %s", r.Allowed, r.Reason)
}

// traceDisagrees compares a trace with Evaluate's decision: the verdict,
// and for the directions the trace reached, isolation and the policy and
// rule that allowed. "" when they agree.
func traceDisagrees(c polCell, d policy.Decision, r api.TraceResponse) string {
	if r.Allowed != d.Allowed {
		return fmt.Sprintf("%s: trace says allowed=%v (%s), Evaluate says %s", c, r.Allowed, r.Reason, d.Reason)
	}
	if c.Src == c.Dst {
		return ""
	}
	dirs := map[string]api.TraceDirection{}
	for _, dd := range r.Directions {
		dirs[dd.Direction] = dd
	}
	check := func(name string, want policy.DirDecision) string {
		got := dirs[name]
		if got.Isolated != want.Isolated || got.Allowed != want.Allowed || got.Policy != want.Policy || (want.Isolated && got.Rule != want.Rule) ||
			(want.Isolated && !slices.Equal(got.Policies, want.Policies)) {
			return fmt.Sprintf("%s: %s: trace says isolated=%v allowed=%v by %q rule %d (policies %v); Evaluate says isolated=%v allowed=%v by %q rule %d (policies %v)",
				c, name, got.Isolated, got.Allowed, got.Policy, got.Rule, got.Policies, want.Isolated, want.Allowed, want.Policy, want.Rule, want.Policies)
		}
		return ""
	}
	if s := check("egress", d.Egress); s != "" {
		return s
	}
	if !d.Egress.Allowed {
		return "" // the packet never reaches the destination's node
	}
	return check("ingress", d.Ingress)
}

// waitTrace polls `policy trace` (the API behind it) on every node for
// every cell until all agree with Evaluate: then every node's store holds
// what the test applied. It fails the test after timeout with the
// disagreements.
func (e *polEnv) waitTrace(t *testing.T, timeout time.Duration) {
	t.Helper()
	e.waitTraceCells(t, timeout, e.polCells())
}

// waitTraceCells is waitTrace for some cells.
func (e *polEnv) waitTraceCells(t *testing.T, timeout time.Duration, cells []polCell) {
	t.Helper()
	snap := e.snapshot()
	ev := policy.NewEvaluator(snap)
	want := map[polCell]policy.Decision{}
	for _, c := range cells {
		want[c] = ev.Evaluate(e.packet(c))
	}
	start := time.Now()
	var last []string
	for {
		last = last[:0]
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, n := range e.c.Nodes {
			for _, c := range cells {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					r, err := e.trace(n, c)
					var s string
					if err != nil {
						s = fmt.Sprintf("%s: trace on %s: %v", c, n.Name, err)
					} else if s = traceDisagrees(c, want[c], r); s != "" {
						s = "on " + n.Name + ": " + s
					}
					if s != "" {
						mu.Lock()
						last = append(last, s)
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if len(last) == 0 {
			t.Logf("policy trace agrees with Evaluate on %d cells on every node after %s", len(cells), time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Since(start) > timeout {
			sort.Strings(last)
			if len(last) > 15 {
				last = append(last[:15], fmt.Sprintf("... %d more", len(last)-15))
			}
			t.Fatalf("policy trace still disagrees with Evaluate after %s:\n  %s", timeout, strings.Join(last, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkTraceCLI runs `netloom policy trace SRC DST PORT/PROTO` (the
// command line, text output) for a few cells on the source pod's node and
// checks its verdict line and the deciding policy against Evaluate.
func (e *polEnv) checkTraceCLI(t *testing.T, cells ...polCell) {
	t.Helper()
	want, _ := e.expected()
	for _, c := range cells {
		n := e.nodeOf(e.pod(c.Src))
		r := inNS(n.NS, nil, nil, exe, "policy", "trace", "--socket", n.Socket, c.Src, c.Dst, c.Port.String())
		if r.err != nil {
			t.Errorf("netloom policy trace %s on %s: %v", c, n.Name, r)
			continue
		}
		d := want[c]
		first, _, _ := strings.Cut(r.stdout, "\n")
		verdict := "DENIED"
		if d.Allowed {
			verdict = "ALLOWED"
		}
		if !strings.HasPrefix(first, verdict+" ") {
			t.Errorf("netloom policy trace %s: first line %q, want %s (Evaluate: %s)", c, first, verdict, d.Reason)
		}
		for _, dd := range []policy.DirDecision{d.Egress, d.Ingress} {
			if dd.Policy != "" && !strings.Contains(r.stdout, dd.Policy+" rule "+fmt.Sprint(dd.Rule)) {
				t.Errorf("netloom policy trace %s does not name %s rule %d (Evaluate: %s):\n%s", c, dd.Policy, dd.Rule, d.Reason, r.stdout)
			}
		}
		t.Logf("netloom policy trace %s %s %s: %s", c.Src, c.Dst, c.Port, first)
	}
}

// pickCells chooses cells worth a trace on the command line: the first
// allowed cell with an isolated direction, the first denied cell, and the
// first allowed cell between different nodes.
func (e *polEnv) pickCells() []polCell {
	want, _ := e.expected()
	var out []polCell
	var haveAllowed, haveDenied, haveCross bool
	for _, c := range e.polCells() {
		d := want[c]
		if c.Src == c.Dst {
			continue
		}
		switch {
		case d.Allowed && (d.Ingress.Isolated || d.Egress.Isolated) && !haveAllowed:
			out, haveAllowed = append(out, c), true
		case !d.Allowed && !haveDenied:
			out, haveDenied = append(out, c), true
		case d.Allowed && !haveCross && e.pod(c.Src).Node != e.pod(c.Dst).Node:
			out, haveCross = append(out, c), true
		}
	}
	return out
}

// converge waits for the stores (trace), then checks the matrix and a few
// traces on the command line.
func (e *polEnv) converge(t *testing.T) {
	t.Helper()
	e.waitTrace(t, 30*time.Second)
	e.checkMatrix(t, 15*time.Second)
	e.checkTraceCLI(t, e.pickCells()...)
}

// ---- policy builders ----

func polTCP() *corev1.Protocol { p := corev1.ProtocolTCP; return &p }
func polUDP() *corev1.Protocol { p := corev1.ProtocolUDP; return &p }

func polNum(n int) *intstr.IntOrString     { v := intstr.FromInt32(int32(n)); return &v }
func polName(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }

func polSel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// polNP is a NetworkPolicy named ns/name selecting sel.
func polNP(ns, name string, sel *metav1.LabelSelector) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *sel},
	}
}

func polTypes(ts ...networkingv1.PolicyType) []networkingv1.PolicyType { return ts }

// polSubnet is the /24 pod subnet of the node a pod runs on.
func (e *polEnv) polSubnet(key string) netip.Prefix {
	return netip.PrefixFrom(e.pod(key).Pod.IP, 24).Masked()
}

// polHost is a pod's address as a /32.
func (e *polEnv) polHost(key string) string {
	return netip.PrefixFrom(e.pod(key).Pod.IP, 32).String()
}

// ---- traffic between nodes and pods ----

// routeSrc is the source address node n uses towards dst.
func routeSrc(n *demo.Node, dst netip.Addr) (netip.Addr, error) {
	r := inNS(n.NS, nil, nil, "ip", "-4", "-o", "route", "get", dst.String())
	if r.err != nil {
		return netip.Addr{}, fmt.Errorf("ip route get %s in %s: %v", dst, n.NS, r)
	}
	f := strings.Fields(r.stdout)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "src" {
			return netip.ParseAddr(f[i+1])
		}
	}
	return netip.Addr{}, fmt.Errorf("ip route get %s in %s: no src in %q", dst, n.NS, r.stdout)
}

// checkHostProbe probes tcp/80 from namespace ns to dst (answered by
// wantAnswer) until the outcome is want or bound has passed.
func checkHostProbe(t *testing.T, what, ns string, dst netip.Addr, wantAnswer string, want bool, reason string, bound time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		ans, err := polProbe(ns, dst, polPort{policy.TCP, 80}, polProbeTimeout)
		got := err == nil && ans == wantAnswer
		if err != nil && !errors.Is(err, polErrNoAnswer) {
			t.Logf("%s: %v", what, err)
		}
		if got == want {
			t.Logf("%s tcp/80: connected=%v as expected (%s)", what, got, reason)
			return
		}
		if time.Since(start) > bound {
			t.Errorf("%s tcp/80: connected=%v (answer %q, err %v), want %v: %s", what, got, ans, err, want, reason)
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkNodeToPod: node n connects to pod key. A node reaches its own pods
// whatever the policies (health checks: that traffic leaves by the output
// hook, which policy does not filter); another node is an address that is
// not a pod, with the source address its route picks, and gets
// Evaluate's verdict.
func (e *polEnv) checkNodeToPod(t *testing.T, n *demo.Node, key string) {
	t.Helper()
	p := e.pod(key)
	src, err := routeSrc(n, p.Pod.IP)
	if err != nil {
		t.Fatal(err)
	}
	want, reason := true, "a node reaches its own pods"
	if p.Pod.Node != n.Name {
		d := policy.Evaluate(e.snapshot(), policy.Packet{Src: src, Dst: p.Pod.IP, Protocol: policy.TCP, Port: 80})
		want, reason = d.Allowed, d.Reason
	}
	what := fmt.Sprintf("node %s (%s) -> pod %s on %s", n.Name, src, key, p.Pod.Node)
	checkHostProbe(t, what, n.NS, p.Pod.IP, fmt.Sprintf("%s 80/tcp", key), want, reason, 10*time.Second)
	if p.Pod.Node != n.Name || traceOwnNode {
		e.checkHostTrace(t, what, n, src.String(), key, want)
	}
}

// traceOwnNode makes checkNodeToPod and checkPodToNode check `policy
// trace` for traffic between a pod and its own node too; only the case
// TraceOwnNodeTraffic sets it (see there).
var traceOwnNode = false

// checkHostTrace: `netloom policy trace` (the API, on node n) for traffic
// between a node and a pod says what the kernel did.
func (e *polEnv) checkHostTrace(t *testing.T, what string, n *demo.Node, src, dst string, want bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp api.TraceResponse
	if err := e.clients[n.Name].Do(ctx, "POST", api.PathTrace, api.TraceRequest{Src: src, Dst: dst, Port: "80/tcp"}, &resp); err != nil {
		t.Errorf("policy trace %s %s 80/tcp on %s: %v", src, dst, n.Name, err)
		return
	}
	if resp.Allowed != want {
		t.Errorf("%s: policy trace %s %s 80/tcp says allowed=%v (%s), but the kernel's verdict is allowed=%v", what, src, dst, resp.Allowed, resp.Reason, want)
	}
}

// checkPodToNode: pod key connects to node n's underlay address. A pod
// reaches its own node whatever the policies (the input hook); another
// node gets Evaluate's verdict for an address that is not a pod.
func (e *polEnv) checkPodToNode(t *testing.T, key string, n *demo.Node) {
	t.Helper()
	p := e.pod(key)
	want, reason := true, "a pod reaches its own node"
	if p.Pod.Node != n.Name {
		d := policy.Evaluate(e.snapshot(), policy.Packet{Src: p.Pod.IP, Dst: n.Addr, Protocol: policy.TCP, Port: 80})
		want, reason = d.Allowed, d.Reason
	}
	what := fmt.Sprintf("pod %s on %s -> node %s (%s)", key, p.Pod.Node, n.Name, n.Addr)
	checkHostProbe(t, what, p.Pod.NS, n.Addr, fmt.Sprintf("node/%s 80/tcp", n.Name), want, reason, 10*time.Second)
	if p.Pod.Node != n.Name || traceOwnNode {
		e.checkHostTrace(t, what, e.nodeOf(p), key, n.Addr.String(), want)
	}
}

// ---- many policies ----

// polBulk returns n policies named <prefix>-<i> in namespace ns, of
// several shapes (ingress from a namespace selector, from an ipBlock with
// an except by named port, egress to pods by UDP, both selectors and a
// port range, matchExpressions, and selectors that select nothing),
// selecting pods by app=bulk-<k>. seed varies ports and peers so that a
// second set with the same names is an update.
func polBulk(ns, prefix string, n, seed int) []*networkingv1.NetworkPolicy {
	out := make([]*networkingv1.NetworkPolicy, 0, n)
	for i := range n {
		app := fmt.Sprintf("bulk-%d", (i+seed)%5)
		p := polNP(ns, fmt.Sprintf("%s-%04d", prefix, i), polSel("app", app))
		port := 1000 + (i+seed)%1000
		switch i % 6 {
		case 0:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "bulk")}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(port)}},
			}}
		case 1:
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: fmt.Sprintf("10.%d.%d.0/24", 100+(i+seed)%50, i%256), Except: []string{fmt.Sprintf("10.%d.%d.128/25", 100+(i+seed)%50, i%256)},
				}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: polName("http")}},
			}}
		case 2:
			p.Spec.PolicyTypes = polTypes(polEgress)
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: polSel("app", fmt.Sprintf("bulk-%d", (i+seed+1)%5))}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: polUDP(), Port: polNum(53)}, {Protocol: polTCP(), Port: polNum(port)}},
			}}
		case 3:
			end := int32(port + 100)
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel("team", "bulk"), PodSelector: polSel("app", fmt.Sprintf("bulk-%d", (i+seed+2)%5))}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: polTCP(), Port: polNum(port), EndPort: &end}},
			}}
		case 4:
			p.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{app, fmt.Sprintf("bulk-%d", (i+seed+3)%5)}},
			}}
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: polSel()}}}}
		case 5:
			p.Spec.PodSelector = *polSel("app", fmt.Sprintf("nothing-%d", i))
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: polSel()}}}}
		}
		out = append(out, p)
	}
	return out
}

// polObjs turns policies into objects for apply and del.
func polObjs(ps []*networkingv1.NetworkPolicy) []any {
	out := make([]any, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}
