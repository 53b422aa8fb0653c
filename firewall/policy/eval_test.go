package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/mesh/objects"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The world of the upstream network policy e2e tests: namespaces x, y, z
// (labels ns=<name>), pods a, b, c in each (labels pod=<name>), every pod
// serving on 80 and 81 over TCP, UDP and SCTP under the names
// serve-<port>-<proto>.
var (
	worldNS   = []string{"x", "y", "z"}
	worldPods = []string{"a", "b", "c"}
)

func servePorts() []NamedPort {
	var out []NamedPort
	for _, proto := range []Protocol{TCP, UDP, SCTP} {
		for _, port := range []uint16{80, 81} {
			out = append(out, NamedPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), Port: port, Protocol: proto})
		}
	}
	return out
}

// podIP: x/a is 10.244.1.2, x/b 10.244.1.3, y/a 10.244.2.2, ...
func podIP(ns, name string) netip.Addr {
	i := strings.Index("xyz", ns)
	j := strings.Index("abc", name)
	return netip.AddrFrom4([4]byte{10, 244, byte(i + 1), byte(j + 2)})
}

func world(pols ...*networkingv1.NetworkPolicy) *Snapshot {
	s := &Snapshot{Namespaces: map[string]map[string]string{}, Policies: pols}
	for _, ns := range worldNS {
		s.Namespaces[ns] = map[string]string{"ns": ns}
		for j, name := range worldPods {
			s.Pods = append(s.Pods, Pod{
				Namespace: ns,
				Name:      name,
				IP:        podIP(ns, name),
				Node:      fmt.Sprintf("node%d", 1+j%2),
				Labels:    map[string]string{"pod": name},
				Ports:     servePorts(),
			})
		}
	}
	return s
}

func (s *Snapshot) pod(key string) *Pod {
	for i := range s.Pods {
		if s.Pods[i].Key() == key {
			return &s.Pods[i]
		}
	}
	panic("no pod " + key)
}

// np builds a policy from YAML: its namespace, name and spec (block style,
// starting at column 0). The policy is decoded as given (no defaults), and
// also checked with mesh/objects, so every test policy is one a user could
// apply.
func np(t testing.TB, ns, name, spec string) *networkingv1.NetworkPolicy {
	t.Helper()
	doc := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: \"" + ns + "\"\nspec:\n"
	for _, l := range strings.Split(strings.TrimRight(spec, "\n"), "\n") {
		doc += "  " + l + "\n"
	}
	if _, err := objects.Parse([]byte(doc)); err != nil {
		t.Fatalf("policy %s/%s is not valid: %v\n%s", ns, name, err, doc)
	}
	var pol networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &pol); err != nil {
		t.Fatalf("policy %s/%s: %v", ns, name, err)
	}
	return &pol
}

// truth is a reachability matrix between the pods of the world: from
// (rows) -> to (columns).
type truth struct {
	pods []string
	ok   map[[2]string]bool
}

func newTruth(s *Snapshot, def bool) *truth {
	t := &truth{ok: map[[2]string]bool{}}
	for _, p := range s.Pods {
		t.pods = append(t.pods, p.Key())
	}
	for _, a := range t.pods {
		for _, b := range t.pods {
			t.ok[[2]string{a, b}] = def
		}
	}
	return t
}

// matches: "*", "x/*", "*/a" or "x/a".
func matches(pattern, key string) bool {
	if pattern == "*" {
		return true
	}
	pn, pp, _ := strings.Cut(pattern, "/")
	kn, kp, _ := strings.Cut(key, "/")
	return (pn == "*" || pn == kn) && (pp == "*" || pp == kp)
}

// set expects v from every pod matching from to every pod matching to. A
// pod's traffic to itself stays allowed (loopback follows no policy).
func (t *truth) set(from, to string, v bool) *truth {
	for _, a := range t.pods {
		for _, b := range t.pods {
			if a != b && matches(from, a) && matches(to, b) {
				t.ok[[2]string{a, b}] = v
			}
		}
	}
	return t
}

func (t *truth) String() string {
	var b strings.Builder
	b.WriteString("from\\to")
	for _, p := range t.pods {
		b.WriteString(" " + p)
	}
	b.WriteString("\n")
	for _, from := range t.pods {
		b.WriteString(from + "    ")
		for _, to := range t.pods {
			c := "X"
			if t.ok[[2]string{from, to}] {
				c = "."
			}
			b.WriteString("   " + c)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func reach(s *Snapshot, proto Protocol, port uint16) *truth {
	t := newTruth(s, false)
	e := NewEvaluator(s)
	for _, a := range s.Pods {
		for _, b := range s.Pods {
			d := e.Evaluate(Packet{Src: a.IP, Dst: b.IP, Protocol: proto, Port: port})
			t.ok[[2]string{a.Key(), b.Key()}] = d.Allowed
		}
	}
	return t
}

type check struct {
	proto Protocol
	port  uint16
	want  func(t *truth) // expectations on top of "everything allowed"
}

// TestTruthTables follows the network policy e2e tests of Kubernetes
// (test/e2e/network/netpol): for each case, the whole reachability matrix
// of the world for some probes.
func TestTruthTables(t *testing.T) {
	tcp80 := func(f func(t *truth)) []check { return []check{{TCP, 80, f}} }
	denyIngressToXA := func(t *truth) { t.set("*", "x/a", false) }
	tests := []struct {
		name     string
		policies func(t testing.TB) []*networkingv1.NetworkPolicy
		mutate   func(s *Snapshot)
		checks   []check
	}{
		{
			name:     "no policies: everything open",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy { return nil },
			checks:   []check{{TCP, 80, func(*truth) {}}, {UDP, 81, func(*truth) {}}, {SCTP, 9999, func(*truth) {}}},
		},
		{
			name: "default-deny-ingress",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]\n")}
			},
			checks: []check{
				{TCP, 80, func(t *truth) { t.set("*", "x/*", false) }},
				{UDP, 81, func(t *truth) { t.set("*", "x/*", false) }},
				{SCTP, 80, func(t *truth) { t.set("*", "x/*", false) }},
			},
		},
		{
			name: "default-deny-ingress with policyTypes omitted and ingress: []",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-ingress", "podSelector: {}\ningress: []\n")}
			},
			checks: tcp80(func(t *truth) { t.set("*", "x/*", false) }),
		},
		{
			name: "default-deny-all",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\n")}
			},
			checks: tcp80(func(t *truth) { t.set("*", "x/*", false).set("x/*", "*", false) }),
		},
		{
			name: "default-deny-egress",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]\n")}
			},
			checks: []check{
				{TCP, 80, func(t *truth) { t.set("x/*", "*", false) }},
				{UDP, 53, func(t *truth) { t.set("x/*", "*", false) }},
			},
		},
		{
			name: "allow from pods within the namespace by podSelector",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "x-a-from-b", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("x/b", "x/a", true) }),
		},
		{
			name: "allow from every pod of every namespace: namespaceSelector {}",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "all-ns", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {}\n")}
			},
			checks: tcp80(func(*truth) {}),
		},
		{
			name: "allow only from a different namespace by namespaceSelector matchLabels",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "from-y", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n")}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }),
		},
		{
			name: "podSelector with matchExpressions In",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "in", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector:
      matchExpressions:
      - {key: pod, operator: In, values: [b]}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("x/b", "x/a", true) }),
		},
		{
			name: "namespaceSelector with matchExpressions NotIn",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "notin", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - {key: ns, operator: NotIn, values: [x]}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true).set("z/*", "x/a", true) }),
		},
		{
			name: "podSelector OR namespaceSelector: two peers",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "or", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
  - podSelector: {matchLabels: {pod: b}}
`)}
			},
			checks: tcp80(func(t *truth) {
				denyIngressToXA(t)
				t.set("y/*", "x/a", true).set("z/*", "x/a", true).set("x/b", "x/a", true)
			}),
		},
		{
			name: "podSelector AND namespaceSelector: one peer",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "and", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
    podSelector: {matchLabels: {pod: b}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/b", "x/a", true).set("z/b", "x/a", true) }),
		},
		{
			name: "several pod and namespace selectors in one peer",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "multi", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
    podSelector:
      matchExpressions: [{key: pod, operator: In, values: [b, c]}]
`)}
			},
			checks: tcp80(func(t *truth) {
				denyIngressToXA(t)
				t.set("y/b", "x/a", true).set("y/c", "x/a", true).set("z/b", "x/a", true).set("z/c", "x/a", true)
			}),
		},
		{
			name: "any of several podSelectors",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "any", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  - podSelector: {matchLabels: {pod: c}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("x/b", "x/a", true).set("x/c", "x/a", true) }),
		},
		{
			name: "a pod in a different namespace: podSelector AND namespaceSelector",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "y-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: 'y'}}
    podSelector: {matchLabels: {pod: a}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/a", "x/a", true) }),
		},
		{
			name: "a podSelector with an empty namespaceSelector: those pods in every namespace",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "b-anywhere", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {}
    podSelector: {matchLabels: {pod: b}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("*/b", "x/a", true) }),
		},
		{
			name: "an empty podSelector peer: every pod of the policy's namespace only",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "same-ns", "podSelector: {}\ningress:\n- from:\n  - podSelector: {}\n")}
			},
			checks: tcp80(func(t *truth) { t.set("*", "x/*", false).set("x/*", "x/*", true) }),
		},
		{
			name: "ports: allow from namespace y on 81 only",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "y-81", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: 'y'}}
  ports:
  - port: 81
`)}
			},
			checks: []check{
				{TCP, 80, denyIngressToXA},
				{TCP, 81, func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }},
				{UDP, 81, denyIngressToXA}, // protocol defaults to TCP
			},
		},
		{
			name: "stacked policies with overlapping podSelectors add up",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "y-80", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n  ports:\n  - port: 80\n"),
					np(t, "x", "y-81", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n  ports:\n  - port: 81\n"),
				}
			},
			checks: []check{
				{TCP, 80, func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }},
				{TCP, 81, func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }},
				{TCP, 82, denyIngressToXA},
			},
		},
		{
			name: "allow-all ingress rule {}",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "allow-all", "podSelector: {}\ningress:\n- {}\n")}
			},
			checks: []check{{TCP, 80, func(*truth) {}}, {SCTP, 81, func(*truth) {}}},
		},
		{
			name: "multiple ingress policies: allow-all wins over a narrower one",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "narrow", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n  ports:\n  - port: 80\n"),
					np(t, "x", "allow-all", "podSelector: {matchLabels: {pod: a}}\ningress:\n- {}\n"),
				}
			},
			checks: []check{{TCP, 80, func(*truth) {}}, {TCP, 81, func(*truth) {}}},
		},
		{
			name: "multiple egress policies: allow-all wins over a narrower one",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "narrow", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: 80\n"),
					np(t, "x", "allow-all", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- {}\n"),
				}
			},
			checks: []check{{TCP, 80, func(*truth) {}}, {TCP, 81, func(*truth) {}}},
		},
		{
			name: "named port on ingress",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "named", "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - port: serve-81-tcp\n")}
			},
			checks: []check{
				{TCP, 80, denyIngressToXA},
				{TCP, 81, func(*truth) {}},
				{UDP, 81, denyIngressToXA},
			},
		},
		{
			name: "named port with protocol UDP resolves the UDP port",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "named-udp", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: serve-80-udp, protocol: UDP}
  - {port: serve-81-tcp, protocol: UDP}
`)}
			},
			checks: []check{
				{UDP, 80, func(*truth) {}},
				{UDP, 81, denyIngressToXA}, // serve-81-tcp is a TCP port
				{TCP, 81, denyIngressToXA},
				{TCP, 80, denyIngressToXA},
			},
		},
		{
			name: "named port from a namespace",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "named-y", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: 'y'}}
  ports:
  - port: serve-80-tcp
`)}
			},
			checks: []check{
				{TCP, 80, func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }},
				{TCP, 81, denyIngressToXA},
			},
		},
		{
			name: "egress on a named port, and DNS",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "named-egress", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- ports:
  - port: serve-80-tcp
- ports:
  - {port: 53, protocol: UDP}
`)}
			},
			checks: []check{
				{TCP, 80, func(*truth) {}},
				{TCP, 81, func(t *truth) { t.set("x/a", "*", false) }},
				{UDP, 53, func(*truth) {}},
				{TCP, 53, func(t *truth) { t.set("x/a", "*", false) }},
			},
		},
		{
			name: "a named port means different numbers on different pods",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "http", "podSelector: {}\ningress:\n- ports:\n  - port: http\n")}
			},
			mutate: func(s *Snapshot) {
				s.pod("y/a").Ports = []NamedPort{{Name: "http", Port: 8080, Protocol: TCP}}
				s.pod("y/b").Ports = []NamedPort{{Name: "http", Port: 80}} // protocol "" is TCP
				s.pod("y/c").Ports = nil
			},
			checks: []check{
				{TCP, 80, func(t *truth) { t.set("*", "y/a", false).set("*", "y/c", false) }},
				{TCP, 8080, func(t *truth) { t.set("*", "y/b", false).set("*", "y/c", false) }},
				{UDP, 80, func(t *truth) { t.set("*", "y/*", false) }},
			},
		},
		{
			name: "a named port on egress is resolved on the destination pod",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "http-out", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: http\n")}
			},
			mutate: func(s *Snapshot) {
				s.pod("x/a").Ports = []NamedPort{{Name: "http", Port: 80, Protocol: TCP}} // the source's own ports do not count
				s.pod("y/a").Ports = []NamedPort{{Name: "http", Port: 8080, Protocol: TCP}}
				s.pod("y/b").Ports = []NamedPort{{Name: "http", Port: 80, Protocol: TCP}}
			},
			checks: []check{
				{TCP, 80, func(t *truth) { t.set("x/a", "*", false).set("x/a", "y/b", true) }},
				{TCP, 8080, func(t *truth) { t.set("x/a", "*", false).set("x/a", "y/a", true) }},
			},
		},
		{
			name: "deny ingress from other namespaces",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "same-ns", "podSelector: {}\ningress:\n- from:\n  - podSelector: {}\n")}
			},
			checks: tcp80(func(t *truth) { t.set("y/*", "x/*", false).set("z/*", "x/*", false) }),
		},
		{
			name: "deny egress from one pod",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\n")}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false) }),
		},
		{
			name: "ingress and egress together",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "both", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: 'y'}}
`)}
			},
			checks: tcp80(func(t *truth) {
				denyIngressToXA(t)
				t.set("x/b", "x/a", true).set("x/a", "*", false).set("x/a", "y/*", true)
			}),
		},
		{
			name: "egress denied on the client even though the server allows everything",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "deny-egress", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\n"),
					np(t, "y", "allow-all", "podSelector: {}\ningress:\n- {}\n"),
				}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false) }),
		},
		{
			name: "egress to a pod of another namespace: podSelector AND namespaceSelector",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "to-y-b", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: 'y'}}
    podSelector: {matchLabels: {pod: b}}
`)}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false).set("x/a", "y/b", true) }),
		},
		{
			name: "any port of one protocol",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "udp-only", "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - protocol: UDP\n")}
			},
			checks: []check{
				{UDP, 80, func(*truth) {}},
				{UDP, 12345, func(*truth) {}},
				{TCP, 80, denyIngressToXA},
				{SCTP, 80, denyIngressToXA},
			},
		},
		{
			name: "SCTP is not TCP",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "sctp", "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - {protocol: SCTP, port: 80}\n")}
			},
			checks: []check{
				{SCTP, 80, func(*truth) {}},
				{TCP, 80, denyIngressToXA},
				{UDP, 80, denyIngressToXA},
				{SCTP, 81, denyIngressToXA},
			},
		},
		{
			name: "UDP only: TCP to the same port is denied",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "udp-81", "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - {protocol: UDP, port: 81}\n")}
			},
			checks: []check{
				{UDP, 81, func(*truth) {}},
				{TCP, 81, denyIngressToXA},
				{UDP, 80, denyIngressToXA},
			},
		},
		{
			name: "the automatic namespace label in matchLabels",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "meta-y", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
`)}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }),
		},
		{
			name: "the automatic namespace label in matchExpressions, for a namespace without a Namespace object",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "meta-yz", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: ['y', z]}]
`)}
			},
			mutate: func(s *Snapshot) { delete(s.Namespaces, "z") },
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true).set("z/*", "x/a", true) }),
		},
		{
			name: "a namespace label that names another namespace does not fake the automatic label",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "meta-y", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
`)}
			},
			mutate: func(s *Snapshot) { s.Namespaces["z"][NamespaceNameLabel] = "y" },
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }),
		},
		{
			name: "endPort: a port range",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "range", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 80, endPort: 81}
  - {port: 9000, endPort: 9100, protocol: SCTP}
  - {port: 443, endPort: 443}
`)}
			},
			checks: []check{
				{TCP, 79, denyIngressToXA},
				{TCP, 80, func(*truth) {}},
				{TCP, 81, func(*truth) {}},
				{TCP, 82, denyIngressToXA},
				{UDP, 80, denyIngressToXA},
				{TCP, 443, func(*truth) {}},
				{TCP, 444, denyIngressToXA},
				{SCTP, 9000, func(*truth) {}},
				{SCTP, 9100, func(*truth) {}},
				{SCTP, 9101, denyIngressToXA},
				{TCP, 9050, denyIngressToXA},
			},
		},
		{
			name: "ipBlock: egress to the addresses of a namespace except one pod",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "cidr", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.3/32]}
`)}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false).set("x/a", "y/a", true).set("x/a", "y/c", true) }),
		},
		{
			name: "ipBlock: an address in both cidr and except is allowed by another rule",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "cidr", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.3/32]}
- to:
  - ipBlock: {cidr: 10.244.2.3/32}
`)}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false).set("x/a", "y/*", true) }),
		},
		{
			name: "ipBlock on ingress matches pods by address, host bits of the cidr ignored",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "from-cidr", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - ipBlock: {cidr: 10.244.3.77/24, except: [10.244.3.4/31]}
`)}
			},
			// 10.244.3.4/31 holds z/c (.4) and .5
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("z/a", "x/a", true).set("z/b", "x/a", true) }),
		},
		{
			name: "ingress and egress policies on different pods are independent",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "a-out", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n    podSelector: {matchLabels: {pod: b}}\n"),
					np(t, "x", "b-in", "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: c}}\n"),
				}
			},
			checks: tcp80(func(t *truth) {
				t.set("x/a", "*", false).set("x/a", "y/b", true).set("*", "x/b", false).set("x/c", "x/b", true)
			}),
		},
		{
			name: "policyTypes omitted with egress rules: Ingress and Egress",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "implicit", "podSelector: {matchLabels: {pod: a}}\negress:\n- to:\n  - podSelector: {matchLabels: {pod: b}}\n")}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("x/a", "*", false).set("x/a", "x/b", true) }),
		},
		{
			name: "policyTypes omitted with egress: []: Ingress only",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "implicit", "podSelector: {matchLabels: {pod: a}}\negress: []\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n")}
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("x/b", "x/a", true) }),
		},
		{
			name: "policyTypes [Egress]: ingress rules are ignored",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "egress-only", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n")}
			},
			checks: tcp80(func(t *truth) { t.set("x/a", "*", false) }),
		},
		{
			name: "policyTypes [Ingress]: egress rules are ignored",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "ingress-only", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress:\n- {}\negress:\n- to:\n  - podSelector: {matchLabels: {pod: b}}\n")}
			},
			checks: tcp80(func(*truth) {}),
		},
		{
			name: "a policy selects pods of its own namespace only",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "deny-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress, Egress]\n")}
			},
			checks: tcp80(func(t *truth) { t.set("*", "y/a", false).set("y/a", "*", false) }),
		},
		{
			name: "podSelector matchExpressions In",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", "podSelector:\n  matchExpressions: [{key: app, operator: In, values: [web, api]}]\npolicyTypes: [Ingress]\n")}
			},
			mutate: appLabels,
			checks: tcp80(func(t *truth) { t.set("*", "x/a", false) }),
		},
		{
			name: "podSelector matchExpressions NotIn selects pods without the key too",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", "podSelector:\n  matchExpressions: [{key: app, operator: NotIn, values: [web]}]\npolicyTypes: [Ingress]\n")}
			},
			mutate: appLabels,
			checks: tcp80(func(t *truth) { t.set("*", "x/b", false).set("*", "x/c", false) }),
		},
		{
			name: "podSelector matchExpressions Exists",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", "podSelector:\n  matchExpressions: [{key: app, operator: Exists}]\npolicyTypes: [Ingress]\n")}
			},
			mutate: appLabels,
			checks: tcp80(func(t *truth) { t.set("*", "x/a", false).set("*", "x/b", false) }),
		},
		{
			name: "podSelector matchExpressions DoesNotExist",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", "podSelector:\n  matchExpressions: [{key: app, operator: DoesNotExist}]\npolicyTypes: [Ingress]\n")}
			},
			mutate: appLabels,
			checks: tcp80(func(t *truth) { t.set("*", "x/c", false) }),
		},
		{
			name: "matchLabels and matchExpressions are ANDed",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", `
podSelector:
  matchLabels: {pod: b}
  matchExpressions: [{key: app, operator: Exists}]
policyTypes: [Ingress]
ingress:
- from:
  - podSelector:
      matchLabels: {app: web}
      matchExpressions: [{key: pod, operator: NotIn, values: [c]}]
`)}
			},
			mutate: func(s *Snapshot) {
				appLabels(s)
				s.pod("y/a").Labels["app"] = "web" // not in x: does not match a podSelector-only peer
				s.pod("x/c").Labels["app"] = "web" // pod NotIn [c] excludes it
			},
			checks: tcp80(func(t *truth) { t.set("*", "x/b", false).set("x/a", "x/b", true) }),
		},
		{
			name: "pod labels changed: selected pods and peers follow",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "x-a-from-b", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n")}
			},
			mutate: func(s *Snapshot) {
				s.pod("x/a").Labels["pod"] = "a2" // no longer selected
				s.pod("x/c").Labels["pod"] = "a"  // now selected
				s.pod("x/b").Labels["pod"] = "b2" // no longer a peer
				s.pod("y/b").Labels["pod"] = "b"  // was already, but in y
			},
			checks: tcp80(func(t *truth) { t.set("*", "x/c", false) }),
		},
		{
			name: "namespace labels changed: namespace peers follow",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "from-prod", "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {env: prod}}\n")}
			},
			mutate: func(s *Snapshot) {
				s.Namespaces["y"]["env"] = "prod"
				s.Namespaces["z"]["env"] = "dev"
			},
			checks: tcp80(func(t *truth) { denyIngressToXA(t); t.set("y/*", "x/a", true) }),
		},
		{
			name: "egress deny-all with a DNS-like allowance to one namespace",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]\n"),
					np(t, "x", "dns", `
podSelector: {}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}
    podSelector: {matchLabels: {pod: c}}
  ports:
  - {port: 53, protocol: UDP}
  - {port: 53, protocol: TCP}
`),
				}
			},
			checks: []check{
				{UDP, 53, func(t *truth) { t.set("x/*", "*", false).set("x/*", "z/c", true) }},
				{TCP, 53, func(t *truth) { t.set("x/*", "*", false).set("x/*", "z/c", true) }},
				{TCP, 80, func(t *truth) { t.set("x/*", "*", false) }},
			},
		},
		{
			name: "both ends isolated: the source's egress and the destination's ingress must both allow",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "a-to-y", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n"),
					np(t, "y", "from-x-a-b", "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}\n"),
				}
			},
			checks: tcp80(func(t *truth) {
				t.set("x/a", "*", false).set("x/a", "y/*", true)
				t.set("*", "y/*", false).set("x/a", "y/*", true).set("x/b", "y/*", true)
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world(tt.policies(t)...)
			if tt.mutate != nil {
				tt.mutate(s)
			}
			for _, c := range tt.checks {
				want := newTruth(s, true)
				c.want(want)
				got := reach(s, c.proto, c.port)
				if diff := cmp.Diff(want.String(), got.String()); diff != "" {
					t.Errorf("%s/%d (-want +got, X = denied):\n%s", c.proto, c.port, diff)
				}
			}
		})
	}
}

// appLabels gives x/a app=web, x/b app=db and x/c no app label.
func appLabels(s *Snapshot) {
	s.pod("x/a").Labels["app"] = "web"
	s.pod("x/b").Labels["app"] = "db"
}

var (
	external = netip.MustParseAddr("192.0.2.1")
	nodeAddr = netip.MustParseAddr("10.0.0.1")
)

func pkt(src, dst netip.Addr, proto Protocol, port uint16) Packet {
	return Packet{Src: src, Dst: dst, Protocol: proto, Port: port}
}

func open(pod string) DirDecision { return DirDecision{Pod: pod, Allowed: true, Rule: -1} }

var notPod = DirDecision{Allowed: true, Rule: -1}

// TestDecisions checks whole decisions, reasons included.
func TestDecisions(t *testing.T) {
	xa, xb, yb, ya := podIP("x", "a"), podIP("x", "b"), podIP("y", "b"), podIP("y", "a")
	tests := []struct {
		name     string
		policies func(t testing.TB) []*networkingv1.NetworkPolicy
		mutate   func(s *Snapshot)
		pkt      Packet
		want     Decision
	}{
		{
			name:     "no policies",
			policies: func(testing.TB) []*networkingv1.NetworkPolicy { return nil },
			pkt:      pkt(xa, yb, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: ingress of y/b not isolated; egress of x/a not isolated",
				Egress: open("x/a"), Ingress: open("y/b")},
		},
		{
			name: "allowed by an ingress rule",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "allow-x", "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n")}
			},
			pkt: pkt(xa, yb, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: ingress of y/b by policy y/allow-x rule 0; egress of x/a not isolated",
				Egress:  open("x/a"),
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Allowed: true, Policy: "y/allow-x", Rule: 0, Policies: []string{"y/allow-x"}}},
		},
		{
			name: "denied: isolated by two policies, neither allows",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "y", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]\n"),
					np(t, "y", "allow-z", "podSelector: {matchLabels: {pod: b}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: z}}\n"),
				}
			},
			pkt: pkt(xa, yb, TCP, 80),
			want: Decision{Allowed: false, Reason: "denied: ingress of y/b isolated by y/allow-z, y/deny-all; no rule allows x/a on TCP/80",
				Egress:  open("x/a"),
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Rule: -1, Policies: []string{"y/allow-z", "y/deny-all"}}},
		},
		{
			name: "the first policy in name order and its first allowing rule decide",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "y", "zz-all", "podSelector: {}\ningress:\n- {}\n"),
					np(t, "y", "mm", "podSelector: {}\ningress:\n- ports:\n  - port: 81\n- from:\n  - podSelector: {}\n- from:\n  - namespaceSelector: {}\n- {}\n"),
					np(t, "y", "aa-other", "podSelector: {}\ningress:\n- ports:\n  - port: 9\n"),
				}
			},
			pkt: pkt(xa, yb, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: ingress of y/b by policy y/mm rule 2; egress of x/a not isolated",
				Egress:  open("x/a"),
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Allowed: true, Policy: "y/mm", Rule: 2, Policies: []string{"y/aa-other", "y/mm", "y/zz-all"}}},
		},
		{
			name: "denied on egress only",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "only-81", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: 81\n")}
			},
			pkt: pkt(xa, yb, TCP, 80),
			want: Decision{Allowed: false, Reason: "denied: egress of x/a isolated by x/only-81; no rule allows y/b on TCP/80",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Rule: -1, Policies: []string{"x/only-81"}},
				Ingress: open("y/b")},
		},
		{
			name: "denied both ways",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "deny", "podSelector: {}\npolicyTypes: [Egress]\n"),
					np(t, "y", "deny", "podSelector: {}\n"),
				}
			},
			pkt: pkt(xa, yb, UDP, 53),
			want: Decision{Allowed: false,
				Reason:  "denied: ingress of y/b isolated by y/deny; no rule allows x/a on UDP/53; egress of x/a isolated by x/deny; no rule allows y/b on UDP/53",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Rule: -1, Policies: []string{"x/deny"}},
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Rule: -1, Policies: []string{"y/deny"}}},
		},
		{
			name: "allowed both ways",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					np(t, "x", "out", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [10.244.3.0/24]}\n"),
					np(t, "y", "in", "podSelector: {}\ningress:\n- ports: [{port: 81}]\n- ports: [{port: 80, endPort: 90}]\n"),
				}
			},
			pkt: pkt(xa, yb, TCP, 85),
			want: Decision{Allowed: true,
				Reason:  "allowed: ingress of y/b by policy y/in rule 1; egress of x/a by policy x/out rule 0",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Allowed: true, Policy: "x/out", Rule: 0, Policies: []string{"x/out"}},
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Allowed: true, Policy: "y/in", Rule: 1, Policies: []string{"y/in"}}},
		},
		{
			name: "from outside the cluster: only ipBlock peers match",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "ext", `
podSelector: {}
ingress:
- from:
  - namespaceSelector: {}
  - podSelector: {}
- from:
  - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
`)}
			},
			pkt: pkt(external, yb, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: ingress of y/b by policy y/ext rule 1; source 192.0.2.1 is not a pod",
				Egress:  notPod,
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Allowed: true, Policy: "y/ext", Rule: 1, Policies: []string{"y/ext"}}},
		},
		{
			name: "from outside the cluster, inside except",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "ext", "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.0/25]}\n")}
			},
			pkt: pkt(external, yb, TCP, 80),
			want: Decision{Allowed: false, Reason: "denied: ingress of y/b isolated by y/ext; no rule allows 192.0.2.1 on TCP/80",
				Egress:  notPod,
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Rule: -1, Policies: []string{"y/ext"}}},
		},
		{
			name: "from the node: hosts are not pods, only an ipBlock can allow it here",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "y", "pods-only", "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}\n")}
			},
			pkt: pkt(nodeAddr, yb, TCP, 8080),
			want: Decision{Allowed: false, Reason: "denied: ingress of y/b isolated by y/pods-only; no rule allows 10.0.0.1 on TCP/8080",
				Egress:  notPod,
				Ingress: DirDecision{Pod: "y/b", Isolated: true, Rule: -1, Policies: []string{"y/pods-only"}}},
		},
		{
			name: "egress to outside: a named port matches nothing, a numeric one does",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "out", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- ports: [{port: serve-80-tcp}]\n- ports: [{port: 80}]\n")}
			},
			pkt: pkt(xa, external, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: destination 192.0.2.1 is not a pod; egress of x/a by policy x/out rule 1",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Allowed: true, Policy: "x/out", Rule: 1, Policies: []string{"x/out"}},
				Ingress: notPod},
		},
		{
			name: "egress to outside denied",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "cluster-only", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 10.244.0.0/16}\n")}
			},
			pkt: pkt(xa, external, UDP, 53),
			want: Decision{Allowed: false, Reason: "denied: egress of x/a isolated by x/cluster-only; no rule allows 192.0.2.1 on UDP/53",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Rule: -1, Policies: []string{"x/cluster-only"}},
				Ingress: notPod},
		},
		{
			name:     "neither end is a pod",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy { return nil },
			pkt:      pkt(external, nodeAddr, TCP, 22),
			want: Decision{Allowed: true, Reason: "allowed: destination 10.0.0.1 is not a pod; source 192.0.2.1 is not a pod",
				Egress: notPod, Ingress: notPod},
		},
		{
			name: "a pod to its own address: loopback, policies do not apply",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\n")}
			},
			pkt: pkt(xa, xa, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: x/a to its own address stays inside the pod; policies do not apply",
				Egress:  DirDecision{Pod: "x/a", Isolated: true, Rule: -1, Policies: []string{"x/deny-all"}},
				Ingress: DirDecision{Pod: "x/a", Isolated: true, Rule: -1, Policies: []string{"x/deny-all"}}},
		},
		{
			name: "a protocol without ports (ICMP): only rules without ports allow it",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "p", "podSelector: {}\ningress:\n- ports: [{protocol: TCP}, {protocol: UDP}, {protocol: SCTP}]\n- from:\n  - namespaceSelector: {matchLabels: {ns: 'y'}}\n")}
			},
			pkt: pkt(ya, xb, "ICMP", 0),
			want: Decision{Allowed: true, Reason: "allowed: ingress of x/b by policy x/p rule 1; egress of y/a not isolated",
				Egress:  open("y/a"),
				Ingress: DirDecision{Pod: "x/b", Isolated: true, Allowed: true, Policy: "x/p", Rule: 1, Policies: []string{"x/p"}}},
		},
		{
			name: "ICMP denied",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "p", "podSelector: {}\ningress:\n- ports: [{protocol: TCP}, {protocol: UDP}, {protocol: SCTP}]\n")}
			},
			pkt: pkt(ya, xb, "ICMP", 0),
			want: Decision{Allowed: false, Reason: "denied: ingress of x/b isolated by x/p; no rule allows y/a on ICMP",
				Egress:  open("y/a"),
				Ingress: DirDecision{Pod: "x/b", Isolated: true, Rule: -1, Policies: []string{"x/p"}}},
		},
		{
			name: "pods without an address are never an end",
			policies: func(t testing.TB) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{np(t, "x", "deny", "podSelector: {}\n")}
			},
			mutate: func(s *Snapshot) {
				s.pod("x/b").IP = netip.Addr{}
				s.Pods = append(s.Pods, Pod{Namespace: "x", Name: "pending"})
			},
			pkt: pkt(yb, netip.Addr{}, TCP, 80),
			want: Decision{Allowed: true, Reason: "allowed: destination invalid IP is not a pod; egress of y/b not isolated",
				Egress: open("y/b"), Ingress: notPod},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world(tt.policies(t)...)
			if tt.mutate != nil {
				tt.mutate(s)
			}
			got := Evaluate(s, tt.pkt)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Evaluate(%+v) (-want +got):\n%s", tt.pkt, diff)
			}
		})
	}
}

func TestIPv6(t *testing.T) {
	a, b := netip.MustParseAddr("fd00:10:244:1::10"), netip.MustParseAddr("fd00:10:244:2::10")
	s := &Snapshot{Pods: []Pod{
		{Namespace: "x", Name: "a", IP: a, Labels: map[string]string{"pod": "a"}},
		{Namespace: "y", Name: "b", IP: b, Labels: map[string]string{"pod": "b"}},
	}}
	s.Policies = []*networkingv1.NetworkPolicy{np(t, "y", "v6", `
podSelector: {}
ingress:
- from:
  - ipBlock: {cidr: 0.0.0.0/0}
- from:
  - ipBlock: {cidr: 'fd00:10:244::/48', except: ['fd00:10:244:1::/64']}
`)}
	tests := []struct {
		src  netip.Addr
		want string
	}{
		{a, "denied: ingress of y/b isolated by y/v6; no rule allows x/a on TCP/80"},
		{netip.MustParseAddr("fd00:10:244:3::1"), "allowed: ingress of y/b by policy y/v6 rule 1; source fd00:10:244:3::1 is not a pod"},
		{netip.MustParseAddr("192.0.2.1"), "allowed: ingress of y/b by policy y/v6 rule 0; source 192.0.2.1 is not a pod"},
		{netip.MustParseAddr("::ffff:192.0.2.1"), "denied: ingress of y/b isolated by y/v6; no rule allows ::ffff:192.0.2.1 on TCP/80"},
	}
	for _, tt := range tests {
		if got := Evaluate(s, pkt(tt.src, b, TCP, 80)).Reason; got != tt.want {
			t.Errorf("from %s: %q, want %q", tt.src, got, tt.want)
		}
	}
}

func TestSelects(t *testing.T) {
	s := world()
	appLabels(s)
	s.pod("y/a").Labels["app"] = "web"
	keys := func(pods []Pod) []string {
		var out []string
		for _, p := range pods {
			out = append(out, p.Key())
		}
		return out
	}
	tests := []struct {
		ns, selector string
		want         []string
	}{
		{"x", "{}", []string{"x/a", "x/b", "x/c"}},
		{"x", "{matchLabels: {app: web}}", []string{"x/a"}},
		{"y", "{matchLabels: {app: web}}", []string{"y/a"}},
		{"x", "{matchLabels: {app: web, pod: b}}", nil},
		{"x", "{matchExpressions: [{key: app, operator: In, values: [web, db]}]}", []string{"x/a", "x/b"}},
		{"x", "{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}", []string{"x/b", "x/c"}},
		{"x", "{matchExpressions: [{key: app, operator: Exists}]}", []string{"x/a", "x/b"}},
		{"x", "{matchExpressions: [{key: app, operator: DoesNotExist}]}", []string{"x/c"}},
		{"x", "{matchLabels: {pod: a}, matchExpressions: [{key: app, operator: DoesNotExist}]}", nil},
		{"z", "{matchExpressions: [{key: pod, operator: NotIn, values: [a, b]}, {key: pod, operator: Exists}]}", []string{"z/c"}},
		{"nowhere", "{}", nil},
	}
	for _, tt := range tests {
		pol := np(t, tt.ns, "p", "podSelector: "+tt.selector+"\n")
		if diff := cmp.Diff(tt.want, keys(Selects(s, pol))); diff != "" {
			t.Errorf("Selects(%s %s) (-want +got):\n%s", tt.ns, tt.selector, diff)
		}
	}
	// An invalid selector (validation rejects it) selects nothing.
	bad := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "bad"}}
	bad.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Equals", Values: []string{"web"}}}
	if got := Selects(s, bad); got != nil {
		t.Errorf("Selects(invalid) = %v, want nothing", keys(got))
	}
}

func TestPolicyTypes(t *testing.T) {
	tests := []struct {
		spec        string
		ingress, eg bool
	}{
		{"podSelector: {}\n", true, false},
		{"podSelector: {}\ningress: []\negress: []\n", true, false},
		{"podSelector: {}\negress:\n- {}\n", true, true},
		{"podSelector: {}\npolicyTypes: [Ingress]\negress:\n- {}\n", true, false},
		{"podSelector: {}\npolicyTypes: [Egress]\ningress:\n- {}\n", false, true},
		{"podSelector: {}\npolicyTypes: [Egress, Ingress]\n", true, true},
	}
	for _, tt := range tests {
		in, eg := PolicyTypes(np(t, "x", "p", tt.spec))
		if in != tt.ingress || eg != tt.eg {
			t.Errorf("PolicyTypes(%q) = %v, %v; want %v, %v", tt.spec, in, eg, tt.ingress, tt.eg)
		}
	}
}

func TestNamespaceLabels(t *testing.T) {
	s := &Snapshot{Namespaces: map[string]map[string]string{"x": {"env": "prod", NamespaceNameLabel: "fake"}}}
	if diff := cmp.Diff(map[string]string{"env": "prod", NamespaceNameLabel: "x"}, map[string]string(NamespaceLabels(s, "x"))); diff != "" {
		t.Errorf("NamespaceLabels(x) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{NamespaceNameLabel: "y"}, map[string]string(NamespaceLabels(s, "y"))); diff != "" {
		t.Errorf("NamespaceLabels(y) (-want +got):\n%s", diff)
	}
	if s.Namespaces["x"][NamespaceNameLabel] != "fake" {
		t.Errorf("NamespaceLabels modified the snapshot")
	}
}

func TestIPBlock(t *testing.T) {
	b, ok := ParseIPBlock(&networkingv1.IPBlock{CIDR: "10.1.2.3/16", Except: []string{"10.1.128.0/17", "10.1.0.1/32"}})
	if !ok {
		t.Fatal("ParseIPBlock failed")
	}
	want := IPBlock{CIDR: netip.MustParsePrefix("10.1.0.0/16"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.128.0/17"), netip.MustParsePrefix("10.1.0.1/32")}}
	if diff := cmp.Diff(want, b, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("ParseIPBlock (-want +got):\n%s", diff)
	}
	for addr, in := range map[string]bool{
		"10.1.0.0": true, "10.1.0.1": false, "10.1.0.2": true, "10.1.127.255": true, "10.1.128.0": false,
		"10.2.0.0": false, "fd00::1": false, "::ffff:10.1.0.2": false,
	} {
		if got := b.Contains(netip.MustParseAddr(addr)); got != in {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, in)
		}
	}
	for _, bad := range []networkingv1.IPBlock{{CIDR: "nonsense"}, {CIDR: "10.0.0.0/8", Except: []string{"x"}}, {}} {
		if _, ok := ParseIPBlock(&bad); ok {
			t.Errorf("ParseIPBlock(%+v) succeeded", bad)
		}
	}
	if (IPBlock{}).Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Errorf("the zero IPBlock matches")
	}
}

func TestSelectorNilAndInvalid(t *testing.T) {
	set := map[string]string{"a": "b"}
	if Selector(nil).Matches(labels.Set(set)) {
		t.Errorf("nil selector matches")
	}
	if !Selector(&metav1.LabelSelector{}).Matches(labels.Set(nil)) {
		t.Errorf("empty selector does not match")
	}
	if Selector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}}).Matches(labels.Set(set)) {
		t.Errorf("invalid selector matches")
	}
}

// naive* is a second, deliberately plain implementation of the semantics,
// written from the API reference without the labels package or netip, to
// check Evaluate against on random snapshots.

func naiveSelects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	for k, v := range sel.MatchLabels {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range sel.MatchExpressions {
		v, has := l[e.Key]
		in := false
		for _, w := range e.Values {
			if w == v {
				in = true
			}
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			if !has || !in {
				return false
			}
		case metav1.LabelSelectorOpNotIn:
			if has && in {
				return false
			}
		case metav1.LabelSelectorOpExists:
			if !has {
				return false
			}
		case metav1.LabelSelectorOpDoesNotExist:
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func naiveInBlock(b *networkingv1.IPBlock, ip netip.Addr) bool {
	_, cidr, err := net.ParseCIDR(b.CIDR)
	if err != nil {
		return false
	}
	nip := net.IP(ip.AsSlice())
	if (ip.Is4() && len(cidr.IP) != net.IPv4len) || (ip.Is6() && len(cidr.IP) != net.IPv6len) {
		return false
	}
	if !cidr.Contains(nip) {
		return false
	}
	for _, e := range b.Except {
		_, ex, err := net.ParseCIDR(e)
		if err != nil || ex.Contains(nip) {
			return false
		}
	}
	return true
}

func naivePorts(ports []networkingv1.NetworkPolicyPort, p Packet, dst *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		proto := "TCP"
		if pp.Protocol != nil {
			proto = string(*pp.Protocol)
		}
		if proto != string(p.Protocol) {
			continue
		}
		if pp.Port == nil {
			return true
		}
		if pp.Port.StrVal != "" {
			if dst == nil {
				continue
			}
			for _, c := range dst.Ports {
				cp := string(c.Protocol)
				if cp == "" {
					cp = "TCP"
				}
				if c.Name == pp.Port.StrVal && cp == proto && c.Port == p.Port {
					return true
				}
			}
			continue
		}
		end := pp.Port.IntVal
		if pp.EndPort != nil {
			end = *pp.EndPort
		}
		if int32(p.Port) >= pp.Port.IntVal && int32(p.Port) <= end {
			return true
		}
	}
	return false
}

func naivePeer(s *Snapshot, polNS string, peer networkingv1.NetworkPolicyPeer, other *Pod, addr netip.Addr) bool {
	if peer.IPBlock != nil {
		return naiveInBlock(peer.IPBlock, addr)
	}
	if other == nil {
		return false
	}
	if peer.NamespaceSelector != nil {
		nl := map[string]string{}
		for k, v := range s.Namespaces[other.Namespace] {
			nl[k] = v
		}
		nl["kubernetes.io/metadata.name"] = other.Namespace
		if !naiveSelects(peer.NamespaceSelector, nl) {
			return false
		}
	} else if other.Namespace != polNS {
		return false
	}
	return peer.PodSelector == nil || naiveSelects(peer.PodSelector, other.Labels)
}

func naiveDir(s *Snapshot, dir Direction, subject, other *Pod, otherAddr netip.Addr, p Packet) bool {
	if subject == nil {
		return true
	}
	isolated := false
	for _, pol := range s.Policies {
		if pol.Namespace != subject.Namespace || !naiveSelects(&pol.Spec.PodSelector, subject.Labels) {
			continue
		}
		types := pol.Spec.PolicyTypes
		if len(types) == 0 {
			types = []networkingv1.PolicyType{"Ingress"}
			if len(pol.Spec.Egress) > 0 {
				types = append(types, "Egress")
			}
		}
		applies := false
		for _, ty := range types {
			if (ty == "Ingress" && dir == Ingress) || (ty == "Egress" && dir == Egress) {
				applies = true
			}
		}
		if !applies {
			continue
		}
		isolated = true
		type rule struct {
			ports []networkingv1.NetworkPolicyPort
			peers []networkingv1.NetworkPolicyPeer
		}
		var rules []rule
		dst := other
		if dir == Ingress {
			dst = subject
			for _, r := range pol.Spec.Ingress {
				rules = append(rules, rule{r.Ports, r.From})
			}
		} else {
			for _, r := range pol.Spec.Egress {
				rules = append(rules, rule{r.Ports, r.To})
			}
		}
		for _, r := range rules {
			if !naivePorts(r.ports, p, dst) {
				continue
			}
			if len(r.peers) == 0 {
				return true
			}
			for _, peer := range r.peers {
				if naivePeer(s, pol.Namespace, peer, other, otherAddr) {
					return true
				}
			}
		}
	}
	return !isolated
}

func naivePod(s *Snapshot, ip netip.Addr) *Pod {
	for i := range s.Pods {
		if s.Pods[i].IP == ip && ip.IsValid() {
			return &s.Pods[i]
		}
	}
	return nil
}

// naive returns the verdicts of egress and ingress.
func naive(s *Snapshot, p Packet) (egress, ingress bool) {
	src, dst := naivePod(s, p.Src), naivePod(s, p.Dst)
	return naiveDir(s, Egress, src, dst, p.Dst, p), naiveDir(s, Ingress, dst, src, p.Src, p)
}

func cloneSnapshot(s *Snapshot) *Snapshot {
	c := &Snapshot{Namespaces: map[string]map[string]string{}}
	for ns, l := range s.Namespaces {
		m := map[string]string{}
		for k, v := range l {
			m[k] = v
		}
		c.Namespaces[ns] = m
	}
	for _, p := range s.Pods {
		q := p
		q.Labels = map[string]string{}
		for k, v := range p.Labels {
			q.Labels[k] = v
		}
		q.Ports = append([]NamedPort(nil), p.Ports...)
		c.Pods = append(c.Pods, q)
	}
	for _, pol := range s.Policies {
		c.Policies = append(c.Policies, pol.DeepCopy())
	}
	return c
}

func snapshotJSON(t *testing.T, s *Snapshot) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dirOf(d Decision, dir Direction) DirDecision {
	if dir == Ingress {
		return d.Ingress
	}
	return d.Egress
}

// packets returns random packets plus, for one random protocol and port,
// every pair of pods.
func packets(r *rand.Rand, s *Snapshot, n int) []Packet {
	var out []Packet
	for i := 0; i < n; i++ {
		out = append(out, RandomPacket(r, s))
	}
	proto, port := pick(r, []Protocol{TCP, UDP, SCTP}), pick(r, PacketPorts)
	for _, a := range s.Pods {
		for _, b := range s.Pods {
			if a.IP != b.IP {
				out = append(out, Packet{Src: a.IP, Dst: b.IP, Protocol: proto, Port: port})
			}
		}
	}
	return out
}

// TestProperties checks Evaluate on random snapshots: against the naive
// implementation, and for invariants that must hold whatever the policies.
func TestProperties(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 40
	}
	var stats struct{ allowed, denied, byRule, open, external int }
	for seed := 0; seed < seeds; seed++ {
		r := rand.New(rand.NewPCG(uint64(seed), 42))
		opts := GenOptions{Policies: 6, IPv6: seed%4 == 3}
		if seed%5 == 4 {
			opts.Namespaces, opts.PodsPerNamespace, opts.Nodes = 4, 4, 3
		}
		s := RandomSnapshot(r, opts)
		before := snapshotJSON(t, s)
		e := NewEvaluator(s)
		pkts := packets(r, s, 60)

		// Each policy alone, for the union property.
		alone := map[string]*Evaluator{}
		for _, pol := range s.Policies {
			c := cloneSnapshot(s)
			c.Policies = []*networkingv1.NetworkPolicy{pol}
			alone[PolicyKey(pol)] = NewEvaluator(c)
		}

		// Shuffled policies and pods give the same decisions.
		shuffled := cloneSnapshot(s)
		r.Shuffle(len(shuffled.Policies), func(i, j int) {
			shuffled.Policies[i], shuffled.Policies[j] = shuffled.Policies[j], shuffled.Policies[i]
		})
		r.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
		es := NewEvaluator(shuffled)

		// One more policy.
		g := &gen{r: r, o: opts.withDefaults(), pl: plan{v6: opts.IPv6}, s: s}
		extra := g.policy("extra")
		more := cloneSnapshot(s)
		more.Policies = append(more.Policies, extra)
		em := NewEvaluator(more)

		// One rule widened: its ports or its peers removed.
		wider := cloneSnapshot(s)
		if len(wider.Policies) > 0 {
			pol := pick(r, wider.Policies)
			if n := len(pol.Spec.Ingress); n > 0 {
				i := r.IntN(n)
				if chance(r, 0.5) {
					pol.Spec.Ingress[i].Ports = nil
				} else {
					pol.Spec.Ingress[i].From = nil
				}
			}
			if n := len(pol.Spec.Egress); n > 0 {
				i := r.IntN(n)
				if chance(r, 0.5) {
					pol.Spec.Egress[i].Ports = nil
				} else {
					pol.Spec.Egress[i].To = nil
				}
			}
		}
		ew := NewEvaluator(wider)

		for _, p := range pkts {
			d := e.Evaluate(p)
			fail := func(format string, args ...any) {
				t.Helper()
				t.Errorf("seed %d, packet %+v: %s\ndecision: %+v", seed, p, fmt.Sprintf(format, args...), d)
			}
			if d.Allowed {
				stats.allowed++
			} else {
				stats.denied++
			}
			if e.Pod(p.Src) == nil || e.Pod(p.Dst) == nil {
				stats.external++
			}

			// The naive implementation agrees.
			eg, in := naive(s, p)
			if eg != d.Egress.Allowed || in != d.Ingress.Allowed {
				fail("naive says egress %v, ingress %v", eg, in)
			}
			// Both directions must allow.
			if d.Allowed != (d.Egress.Allowed && d.Ingress.Allowed) {
				fail("Allowed is not egress AND ingress")
			}
			if !strings.HasPrefix(d.Reason, map[bool]string{true: "allowed: ", false: "denied: "}[d.Allowed]) || strings.Contains(d.Reason, "\n") {
				fail("bad reason %q", d.Reason)
			}
			if got := es.Evaluate(p); !cmp.Equal(d, got) {
				fail("order of policies and pods matters: %s", cmp.Diff(d, got))
			}
			for _, dir := range []Direction{Egress, Ingress} {
				dd := dirOf(d, dir)
				if !dd.Isolated {
					stats.open++
					if !dd.Allowed || dd.Policy != "" || dd.Rule != -1 || dd.Policies != nil {
						fail("%s: not isolated but %+v", dir, dd)
					}
					continue
				}
				// Union: isolated pods are allowed exactly when one of
				// their policies alone allows.
				any := false
				for _, key := range dd.Policies {
					ad := dirOf(alone[key].Evaluate(p), dir)
					if !ad.Isolated {
						fail("%s: policy %s alone does not isolate", dir, key)
					}
					if ad.Allowed {
						any = true
					}
				}
				if any != dd.Allowed {
					fail("%s: allowed %v, but the union of single policies says %v", dir, dd.Allowed, any)
				}
				if dd.Allowed {
					stats.byRule++
					ad := dirOf(alone[dd.Policy].Evaluate(p), dir)
					if ad.Policy != dd.Policy || ad.Rule != dd.Rule || dd.Rule < 0 {
						fail("%s: decided by %s rule %d, alone it says %s rule %d", dir, dd.Policy, dd.Rule, ad.Policy, ad.Rule)
					}
				} else if dd.Policy != "" || dd.Rule != -1 {
					fail("%s: denied but names %s rule %d", dir, dd.Policy, dd.Rule)
				}
			}

			// Adding a policy: a direction newly allowed must be allowed by
			// the new policy; a direction newly denied must have been
			// open before (the new policy isolated the pod).
			dm := em.Evaluate(p)
			for _, dir := range []Direction{Egress, Ingress} {
				b, a := dirOf(d, dir), dirOf(dm, dir)
				if a.Allowed && !b.Allowed && a.Policy != PolicyKey(extra) {
					fail("%s: adding %s allowed it by %s", dir, PolicyKey(extra), a.Policy)
				}
				if b.Allowed && !a.Allowed && b.Isolated {
					fail("%s: adding %s denied a packet of an already isolated pod", dir, PolicyKey(extra))
				}
			}
			// Widening a rule never denies more.
			if d.Allowed && !ew.Evaluate(p).Allowed {
				fail("widening a rule denied it")
			}
		}
		if after := snapshotJSON(t, s); after != before {
			t.Fatalf("seed %d: Evaluate modified the snapshot", seed)
		}
	}
	// The generator is useful only if it produces every kind of verdict.
	t.Logf("verdicts: %+v", stats)
	if stats.allowed == 0 || stats.denied == 0 || stats.byRule == 0 || stats.open == 0 || stats.external == 0 {
		t.Errorf("random snapshots miss a kind of verdict: %+v", stats)
	}
}

// TestGeneratedPoliciesValid: every generated policy passes mesh/objects,
// and the normalized form (with the API defaults) decides the same.
func TestGeneratedPoliciesValid(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 30
	}
	for seed := 0; seed < seeds; seed++ {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		s := RandomSnapshot(r, GenOptions{Policies: 8, IPv6: seed%2 == 1})
		norm := cloneSnapshot(s)
		norm.Policies = nil
		for _, pol := range s.Policies {
			raw, err := json.Marshal(pol)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := objects.FromJSON([]json.RawMessage{raw})
			if err != nil {
				t.Fatalf("seed %d: generated policy rejected: %v\n%s", seed, err, raw)
			}
			np, err := objects.DecodeNetworkPolicy(objs[0].JSON)
			if err != nil {
				t.Fatal(err)
			}
			norm.Policies = append(norm.Policies, np)
		}
		e, en := NewEvaluator(s), NewEvaluator(norm)
		for _, p := range packets(r, s, 30) {
			if a, b := e.Evaluate(p), en.Evaluate(p); !cmp.Equal(a, b) {
				t.Errorf("seed %d, %+v: normalized policies decide differently:\n%s", seed, p, cmp.Diff(a, b))
			}
		}
	}
}

func TestGenerator(t *testing.T) {
	a := RandomSnapshot(rand.New(rand.NewPCG(1, 2)), GenOptions{})
	b := RandomSnapshot(rand.New(rand.NewPCG(1, 2)), GenOptions{})
	if snapshotJSON(t, a) != snapshotJSON(t, b) {
		t.Errorf("same seed, different snapshots")
	}
	if len(a.Pods) != 9 {
		t.Errorf("default snapshot has %d pods, want 9 (x, y, z times a, b, c)", len(a.Pods))
	}
	big := RandomSnapshot(rand.New(rand.NewPCG(3, 4)), GenOptions{Namespaces: 100, PodsPerNamespace: 100, Nodes: 5, Policies: 50, IPv6: true})
	if len(big.Pods) != 64 {
		t.Errorf("capped snapshot has %d pods, want 64", len(big.Pods))
	}
	seen := map[netip.Addr]bool{}
	for _, p := range big.Pods {
		if !p.IP.Is6() || seen[p.IP] {
			t.Errorf("pod %s has address %s (IPv6, unique expected)", p.Key(), p.IP)
		}
		seen[p.IP] = true
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 1000; i++ {
		p := RandomPacket(r, big)
		if p.Src == p.Dst || !p.Src.Is6() || !p.Dst.Is6() {
			t.Fatalf("RandomPacket = %+v", p)
		}
	}
}
