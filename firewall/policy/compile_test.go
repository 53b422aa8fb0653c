package policy

import (
	"flag"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// policy parses a NetworkPolicy from YAML.
func policy(t testing.TB, doc string) *networkingv1.NetworkPolicy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &np); err != nil {
		t.Fatalf("policy: %v\n%s", err, doc)
	}
	return &np
}

// fixture: namespaces x (team=a) and y (team=b); node n1 has y/b, y/c and
// x/c, node n2 has x/a and y/a.
func fixture() *Snapshot {
	return &Snapshot{
		Namespaces: map[string]map[string]string{"x": {"team": "a"}, "y": {"team": "b"}},
		Pods: []Pod{
			{Namespace: "x", Name: "a", IP: addr4("10.244.2.10"), Node: "n2", Labels: map[string]string{"app": "web"}},
			{Namespace: "x", Name: "c", IP: addr4("10.244.1.12"), Node: "n1", Labels: map[string]string{"app": "db"},
				Ports: []NamedPort{{Name: "http", Port: 8080, Protocol: TCP}}},
			{Namespace: "y", Name: "a", IP: addr4("10.244.2.11"), Node: "n2", Labels: map[string]string{"app": "web"}},
			{Namespace: "y", Name: "b", IP: addr4("10.244.1.11"), Node: "n1", Labels: map[string]string{"app": "api"},
				Ports: []NamedPort{{Name: "http", Port: 80, Protocol: TCP}, {Name: "dns", Port: 53, Protocol: UDP}}},
			{Namespace: "y", Name: "c", IP: addr4("10.244.1.13"), Node: "n1", Labels: map[string]string{"app": "web"},
				Ports: []NamedPort{{Name: "http", Port: 8080, Protocol: TCP}}},
		},
		Policies: []*networkingv1.NetworkPolicy{
			mustPolicy(`
metadata: {namespace: "y", name: allow-x-http}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 80}]`),
		},
	}
}

func mustPolicy(doc string) *networkingv1.NetworkPolicy {
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &np); err != nil {
		panic(err)
	}
	return &np
}

var goldenCases = []struct {
	name     string
	opts     Options
	policies []string
}{
	{"deny-all", Options{}, []string{`
metadata: {namespace: "y", name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]`}},
	{"allow-from-namespace", Options{LogDrops: true}, []string{`
metadata: {namespace: "y", name: allow-from-x}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
    - podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}`}},
	{"named-ports", Options{}, []string{`
metadata: {namespace: "y", name: http-by-name}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}, {port: dns, protocol: UDP}, {port: 443}]`, `
metadata: {namespace: "y", name: egress-http-by-name}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: http}]`}},
	{"ipblock-except", Options{}, []string{`
metadata: {namespace: "y", name: outside-but-not}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25, 192.0.2.7/32]}
    - ipBlock: {cidr: 10.244.2.0/24}`}},
	{"endport", Options{}, []string{`
metadata: {namespace: "y", name: port-range}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports:
    - {port: 8000, endPort: 8100}
    - {port: 9000, endPort: 9001, protocol: SCTP}
    - {protocol: UDP}`}},
	{"egress", Options{}, []string{`
metadata: {namespace: "y", name: egress-dns-and-db}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 53, protocol: UDP}, {port: 53}]
  - to: [{podSelector: {matchLabels: {app: db}}, namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 5432}]`, `
metadata: {namespace: "y", name: ingress-open}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]`}},
}

func TestGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			s := fixture()
			s.Policies = nil
			for _, doc := range tt.policies {
				s.Policies = append(s.Policies, policy(t, doc))
			}
			c := Compile(s, "n1", tt.opts)
			if err := c.Model.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := c.Model.String()
			nfttest.CheckGolden(t, filepath.Join("testdata", tt.name+".golden"), got, *update)
			// Deterministic: compiling again, with inputs in another
			// order, gives the same text.
			s2 := fixture()
			s2.Policies = slices.Clone(s.Policies)
			slices.Reverse(s2.Policies)
			slices.Reverse(s2.Pods)
			if again := Compile(s2, "n1", tt.opts).Model.String(); again != got {
				t.Errorf("compile depends on input order:\n%s", cmp.Diff(got, again))
			}
		})
	}
}

// chainRules returns the rule texts of chain name.
func chainRules(m nft.Model, name string) []string {
	ch, ok := m.Chain(name)
	if !ok {
		return nil
	}
	var out []string
	for _, r := range ch.Rules {
		out = append(out, r.Text)
	}
	return out
}

func setElems(m nft.Model, name string) []string {
	for _, s := range m.Sets {
		if s.Name == name {
			out := []string{}
			for _, e := range s.Elements {
				out = append(out, e.Text())
			}
			return out
		}
	}
	return nil
}

func TestCompileStructure(t *testing.T) {
	s := fixture()
	c := Compile(s, "n1", Options{})
	m := c.Model
	if diff := cmp.Diff([]string{
		"ct state established,related accept",
		"ct state invalid drop",
		"ip saddr vmap @pol-egress",
		"ip daddr vmap @pol-ingress",
	}, chainRules(m, ChainForward)); diff != "" {
		t.Errorf("base chain (-want +got):\n%s", diff)
	}
	// Only y/b is selected, and it is on n1.
	ing := setElems(m, MapIngress)
	if len(ing) != 1 || !strings.HasPrefix(ing[0], "10.244.1.11 : jump pol-in-") {
		t.Fatalf("ingress map = %v", ing)
	}
	if eg := setElems(m, MapEgress); len(eg) != 0 {
		t.Errorf("egress map = %v, want empty", eg)
	}
	chain := strings.TrimPrefix(ing[0], "10.244.1.11 : jump ")
	cl := c.Classes[chain]
	if diff := cmp.Diff(Class{
		Direction: Ingress, Policies: []string{"y/allow-x-http"}, Pods: []string{"y/b"},
		Rules: []RuleRef{{Policy: "y/allow-x-http", Direction: Ingress, Rule: 0}, {Direction: Ingress, Rule: -1}},
	}, cl); diff != "" {
		t.Errorf("class (-want +got):\n%s", diff)
	}
	rules := chainRules(m, chain)
	if len(rules) != 2 || !strings.Contains(rules[0], "ip saddr @pol-peer-") ||
		!strings.Contains(rules[0], "meta l4proto . th dport @pol-port-") || !strings.HasSuffix(rules[0], "accept") ||
		!strings.HasSuffix(rules[1], "-dropped\" drop") {
		t.Errorf("class chain rules = %q", rules)
	}
	// Node n2 has no selected pod: empty maps, no class chain.
	m2 := Compile(s, "n2", Options{}).Model
	if len(m2.Chains) != 1 || len(setElems(m2, MapIngress)) != 0 {
		t.Errorf("n2 model has more than the base chain:\n%s", m2)
	}
}

func TestClassesShared(t *testing.T) {
	s := fixture()
	s.Policies = []*networkingv1.NetworkPolicy{
		policy(t, `
metadata: {namespace: "y", name: all}
spec: {podSelector: {}}`),
		policy(t, `
metadata: {namespace: "y", name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]`),
	}
	s.Pods = append(s.Pods, Pod{Namespace: "y", Name: "d", IP: addr4("10.244.1.14"), Node: "n1", Labels: map[string]string{"app": "web"}})
	c := Compile(s, "n1", Options{})
	// y/c and y/d share {all, web}; y/b has {all}.
	if len(c.Classes) != 2 {
		t.Fatalf("classes = %v", c.Classes)
	}
	for _, cl := range c.Classes {
		switch strings.Join(cl.Policies, ",") {
		case "y/all,y/web":
			if diff := cmp.Diff([]string{"y/c", "y/d"}, cl.Pods); diff != "" {
				t.Errorf("pods of {all,web} (-want +got):\n%s", diff)
			}
		case "y/all":
			if diff := cmp.Diff([]string{"y/b"}, cl.Pods); diff != "" {
				t.Errorf("pods of {all} (-want +got):\n%s", diff)
			}
		default:
			t.Errorf("unexpected class %v", cl.Policies)
		}
	}
}

func TestRanges(t *testing.T) {
	blk := &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.0.0.0/24", "10.255.255.255/32"}}
	var got []string
	for _, r := range mergeRanges(ipBlockRanges(blk)) {
		got = append(got, rangeText(r))
	}
	want := []string{"10.0.1.0-10.0.255.255", "10.2.0.0-10.255.255.254"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	all := addrIntervalElement(ipRange{0, ^uint32(0)})
	if all.Text() != "0.0.0.0/0" || all.KernelLen() != 1 {
		t.Errorf("0.0.0.0/0 element = %+v", all)
	}
	if got := rangeText(ipRange{addrValue(addr4("192.0.2.0")), addrValue(addr4("192.0.2.127"))}); got != "192.0.2.0/25" {
		t.Errorf("rangeText = %q", got)
	}
	merged := mergeRanges([]ipRange{{5, 9}, {1, 2}, {3, 4}, {20, 30}, {25, 26}})
	if diff := cmp.Diff([]ipRange{{1, 9}, {20, 30}}, merged, cmp.AllowUnexported(ipRange{})); diff != "" {
		t.Errorf("merge (-want +got):\n%s", diff)
	}
}

func TestLogPrefix(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, "namespace-long/policy-"+strings.Repeat("x", i%5))
	}
	p := logPrefix(Ingress, many)
	if len(p) > 127 || !strings.HasPrefix(p, "netloom-pol ingress namespace-long/policy-") || !strings.Contains(p, ",+") {
		t.Errorf("prefix %q (%d bytes)", p, len(p))
	}
	if got := logPrefix(Egress, []string{"a/b"}); got != "netloom-pol egress a/b: " {
		t.Errorf("prefix %q", got)
	}
}

func addrPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func intOrStr(port int) *intstr.IntOrString {
	v := intstr.FromInt32(int32(port))
	return &v
}
