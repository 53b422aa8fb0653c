package proxy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// elementsOf returns the sorted element texts of a set of m.
func elementsOf(m nft.Model, set string) []string {
	for _, s := range m.Sets {
		if s.Name == set {
			var out []string
			for e := range s.All() {
				out = append(out, e.Text())
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}

// rulesOf returns the rule texts of a chain of m, nil when it is missing.
func rulesOf(m nft.Model, chain string) []string {
	c, ok := m.Chain(chain)
	if !ok {
		return nil
	}
	out := []string{}
	for _, r := range c.Rules {
		out = append(out, r.Text)
	}
	return out
}

func chainNames(m nft.Model) []string {
	var out []string
	for _, c := range m.Chains {
		out = append(out, c.Name)
	}
	slices.Sort(out)
	return out
}

// The non-static part of a model, for comparisons.
type dynamic struct {
	Chains   map[string][]string
	Elements map[string][]string
}

func dynamicOf(m nft.Model) dynamic {
	d := dynamic{Chains: map[string][]string{}, Elements: map[string][]string{}}
	static := map[string]bool{}
	for _, c := range staticChains(Input{}) {
		static[c.Name] = true
	}
	for _, c := range m.Chains {
		if !static[c.Name] {
			d.Chains[c.Name] = rulesOf(m, c.Name)
		}
	}
	for _, s := range m.Sets {
		if s.Name == SetNodePortAddrs {
			continue // Input.NodePortAddresses, not the services
		}
		if es := elementsOf(m, s.Name); len(es) > 0 {
			d.Elements[s.Name] = es
		}
	}
	return d
}

func TestCompile(t *testing.T) {
	named := svc("named", lb.TypeClusterIP, "10.96.0.60", "",
		lb.ServicePort{Protocol: "TCP", Port: 80, TargetPort: intstr.FromString("http")},
		lb.ServicePort{Protocol: "UDP", Port: 53}) // targetPort unset: the port itself
	cipWithVIP := svc("cip", lb.TypeClusterIP, "10.96.0.61", "198.51.100.99", tcp(80, 8080))
	pending := svc("pending", lb.TypeLoadBalancer, "", "", tcp(80, 8080))
	noCIP := svc("no-cip", lb.TypeLoadBalancer, "", "198.51.100.98", tcp(80, 8080))
	localNone := svc("local-none", lb.TypeLoadBalancer, "10.96.0.62", "198.51.100.97", tcp(80, 8080))
	localNone.Service.ExternalTrafficPolicy = lb.PolicyLocal

	tests := []struct {
		name string
		in   Input
		want dynamic
	}{
		{
			name: "named target port, unset target port, not ready and portless endpoints",
			in: withEndpoints(named, ep("a", "10.244.1.2", testNode, "http", 8081),
				ep("b", "10.244.2.2", "node2", "metrics", 9100),
				ep("c", "", testNode, "http", 8081)),
			want: dynamic{
				Chains: map[string][]string{
					"svc-pick-1": {"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-eps"},
					"svc-pick-2": {"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @svc-eps"},
				},
				Elements: map[string][]string{
					MapServices: {"10.96.0.60 . tcp . 80 : goto svc-pick-1", "10.96.0.60 . udp . 53 : goto svc-pick-2"},
					MapEndpoints: {
						"10.96.0.60 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8081",
						"10.96.0.60 . udp . 53 . 0x00000000 : 10.244.1.2 . 53",
						"10.96.0.60 . udp . 53 . 0x00000001 : 10.244.2.2 . 53",
					},
					SetHairpin: {"10.244.1.2 . 10.244.1.2"},
				},
			},
		},
		{
			name: "a ClusterIP service's VIP is ignored",
			in:   withEndpoints(cipWithVIP, ep("a", "10.244.2.3", "node2")),
			want: dynamic{
				Chains: map[string][]string{"svc-pick-1": {"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-eps"}},
				Elements: map[string][]string{
					MapServices:  {"10.96.0.61 . tcp . 80 : goto svc-pick-1"},
					MapEndpoints: {"10.96.0.61 . tcp . 80 . 0x00000000 : 10.244.2.3 . 8080"},
				},
			},
		},
		{
			name: "pending service: nothing; VIP without ClusterIP: served",
			in:   inputOf(fixture{svc: pending, eps: []lb.Endpoint{ep("a", "10.244.2.4", "node2")}}, fixture{svc: noCIP, eps: []lb.Endpoint{ep("b", "10.244.2.5", "node2")}}),
			want: dynamic{
				Chains: map[string][]string{"svc-pick-1": {"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-eps"}},
				Elements: map[string][]string{
					MapServices:  {"198.51.100.98 . tcp . 80 : goto svc-pick-1"},
					MapEndpoints: {"198.51.100.98 . tcp . 80 . 0x00000000 : 10.244.2.5 . 8080"},
				},
			},
		},
		{
			name: "local policy without a local endpoint drops outside clients",
			in:   withEndpoints(localNone, ep("a", "10.244.2.6", "node2")),
			want: dynamic{
				Chains: map[string][]string{
					"svc-pick-1": {"dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-eps"},
					"svc-local-1-0": {
						"ip saddr 10.244.0.0/16 goto svc-pick-1",
						"fib saddr type local goto svc-pick-1",
						"drop",
					},
				},
				Elements: map[string][]string{
					MapServices: {"10.96.0.62 . tcp . 80 : goto svc-pick-1", "198.51.100.97 . tcp . 80 : goto svc-local-1-0"},
					MapEndpoints: {
						"10.96.0.62 . tcp . 80 . 0x00000000 : 10.244.2.6 . 8080",
						"198.51.100.97 . tcp . 80 . 0x00000000 : 10.244.2.6 . 8080",
					},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Compile(tt.in)
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if diff := cmp.Diff(tt.want, dynamicOf(m)); diff != "" {
				t.Errorf("model (-want +got):\n%s", diff)
			}
		})
	}
}

func withEndpoints(s ServiceAddrs, eps ...lb.Endpoint) Input {
	return inputOf(fixture{svc: s, eps: eps})
}

// The same input in any order gives the same model.
func TestCompileDeterministic(t *testing.T) {
	in := inputOf(fixtures()...)
	want := Compile(in).String()
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		sh := in
		sh.Services = slices.Clone(in.Services)
		r.Shuffle(len(sh.Services), func(i, j int) { sh.Services[i], sh.Services[j] = sh.Services[j], sh.Services[i] })
		sh.Endpoints = map[lb.ServiceKey][]lb.Endpoint{}
		for k, v := range in.Endpoints {
			v = slices.Clone(v)
			r.Shuffle(len(v), func(i, j int) { v[i], v[j] = v[j], v[i] })
			sh.Endpoints[k] = v
		}
		if diff := cmp.Diff(want, Compile(sh).String()); diff != "" {
			t.Fatalf("shuffled input %d gives another model (-want +got):\n%s", i, diff)
		}
	}
}

// Adding a service adds elements (and maybe a shared chain) and changes
// nothing that belongs to the others: an update is a small element diff.
func TestCompileStable(t *testing.T) {
	fs := fixtures()
	base := dynamicOf(Compile(inputOf(fs...)))
	extra := fixture{svc: svc("extra", lb.TypeLoadBalancer, "10.96.0.99", "198.51.100.99", tcp(80, 8080)), eps: []lb.Endpoint{
		ep("x-1", "10.244.1.99", testNode), ep("x-2", "10.244.2.99", "node2"),
	}}
	more := dynamicOf(Compile(inputOf(append(fs, extra)...)))
	for name, rules := range base.Chains {
		if diff := cmp.Diff(rules, more.Chains[name]); diff != "" {
			t.Errorf("chain %s changed when another service was added (-before +after):\n%s", name, diff)
		}
	}
	for set, elems := range base.Elements {
		for _, e := range elems {
			if !slices.Contains(more.Elements[set], e) {
				t.Errorf("set %s lost %q when another service was added", set, e)
			}
		}
	}
	var added []string
	for set, elems := range more.Elements {
		for _, e := range elems {
			if !slices.Contains(base.Elements[set], e) {
				added = append(added, set+": "+e)
			}
		}
	}
	slices.Sort(added)
	want := []string{
		"svc-eps: 10.96.0.99 . tcp . 80 . 0x00000000 : 10.244.1.99 . 8080",
		"svc-eps: 10.96.0.99 . tcp . 80 . 0x00000001 : 10.244.2.99 . 8080",
		"svc-eps: 198.51.100.99 . tcp . 80 . 0x00000000 : 10.244.1.99 . 8080",
		"svc-eps: 198.51.100.99 . tcp . 80 . 0x00000001 : 10.244.2.99 . 8080",
		"svc-hairpin: 10.244.1.99 . 10.244.1.99",
		"svc-ips: 10.96.0.99 . tcp . 80 : goto svc-pick-2",
		"svc-ips: 198.51.100.99 . tcp . 80 : goto svc-pick-2",
	}
	if diff := cmp.Diff(want, added); diff != "" {
		t.Errorf("added elements (-want +got):\n%s", diff)
	}
}

func TestSkipped(t *testing.T) {
	a := svc("a", lb.TypeLoadBalancer, "10.96.0.1", "198.51.100.1", tcp(80, 8080))
	b := svc("b", lb.TypeLoadBalancer, "10.96.0.1", "198.51.100.2", tcp(80, 8080), tcp(81, 8080)) // ClusterIP taken by a on port 80
	v6 := svc("v6", lb.TypeLoadBalancer, "fd00::1", "198.51.100.3", tcp(80, 8080))
	sctp := svc("odd", lb.TypeClusterIP, "10.96.0.4", "",
		lb.ServicePort{Protocol: "SCTP", Port: 9}, lb.ServicePort{Protocol: "ICMP", Port: 7})
	in := inputOf(fixture{svc: b}, fixture{svc: a}, fixture{svc: v6}, fixture{svc: sctp})
	want := []string{
		`node port address fd00::/64 is IPv6, which the proxy does not serve yet; skipped`,
		`service default/b: 10.96.0.1:80/tcp is already served for default/a; skipped`,
		`service default/odd: port 7: protocol "ICMP" is not TCP, UDP or SCTP; skipped`,
		`service default/v6: fd00::1 is IPv6, which the proxy does not serve yet; skipped`,
	}
	if diff := cmp.Diff(want, Skipped(in)); diff != "" {
		t.Errorf("Skipped (-want +got):\n%s", diff)
	}
	// All are rejected (no endpoints): the skipped addresses are not.
	got := elementsOf(Compile(in), MapFilter)
	wantFilter := []string{
		"10.96.0.1 . tcp . 80 : goto svc-reject",
		"10.96.0.1 . tcp . 81 : goto svc-reject",
		"10.96.0.4 . sctp . 9 : goto svc-reject",
		"198.51.100.1 . tcp . 80 : goto svc-reject",
		"198.51.100.2 . tcp . 80 : goto svc-reject",
		"198.51.100.2 . tcp . 81 : goto svc-reject",
		"198.51.100.3 . tcp . 80 : goto svc-reject",
	}
	if diff := cmp.Diff(wantFilter, got); diff != "" {
		t.Errorf("svc-filter-ips (-want +got):\n%s", diff)
	}
}

// Without a cluster CIDR, pod subnet or mesh interface the rules still
// work, with less precision.
func TestCompileMinimalInput(t *testing.T) {
	local := svc("local", lb.TypeLoadBalancer, "10.96.0.1", "198.51.100.1", tcp(80, 8080))
	local.Service.ExternalTrafficPolicy = lb.PolicyLocal
	in := Input{
		Node:      testNode,
		Services:  []ServiceAddrs{local},
		Endpoints: map[lb.ServiceKey][]lb.Endpoint{local.Service.Key(): {ep("a", "10.244.1.2", testNode)}},
	}
	m := Compile(in)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		ChainPostrouting: {"ip saddr . ip daddr @svc-hairpin masquerade", "ct status dnat masquerade"},
		"svc-local-1-1":  {"fib saddr type local goto svc-pick-1", "goto svc-pick-local-1"},
	}
	for chain, rules := range want {
		if diff := cmp.Diff(rules, rulesOf(m, chain)); diff != "" {
			t.Errorf("chain %s (-want +got):\n%s", chain, diff)
		}
	}
}

func TestAffinity(t *testing.T) {
	f := fixtures()
	var sticky fixture
	for _, x := range f {
		if x.name == "affinity-local" {
			sticky = x
		}
	}
	m := Compile(inputOf(sticky))
	key := "default/sticky-local/tcp/80"
	ep := func(ip string) string { return endpointNameFor(key, ip, 8080) }
	want := map[string][]string{
		"svc-sticky-" + hashName(key) + "-" + key: {
			"ip saddr @svc-aff-" + ep("10.244.1.55") + " goto svc-ep-" + ep("10.244.1.55"),
			"ip saddr @svc-aff-" + ep("10.244.1.56") + " goto svc-ep-" + ep("10.244.1.56"),
			"ip saddr @svc-aff-" + ep("10.244.2.55") + " goto svc-ep-" + ep("10.244.2.55"),
			"goto svc-aff-pick-3",
		},
		"svc-sticky-local-" + hashName(key) + "-" + key: {
			"ip saddr 10.244.0.0/16 goto svc-sticky-" + hashName(key) + "-" + key,
			"fib saddr type local goto svc-sticky-" + hashName(key) + "-" + key,
			"ip saddr @svc-aff-" + ep("10.244.1.55") + " goto svc-ep-" + ep("10.244.1.55"),
			"ip saddr @svc-aff-" + ep("10.244.1.56") + " goto svc-ep-" + ep("10.244.1.56"),
			"goto svc-aff-pick-local-2",
		},
		"svc-ep-" + ep("10.244.2.55"): {
			"update @svc-aff-" + ep("10.244.2.55") + " { ip saddr timeout 3h }",
			"meta l4proto tcp dnat ip to 10.244.2.55:8080",
		},
		"svc-aff-pick-3":       {"ip daddr . meta l4proto . th dport . numgen random mod 3 vmap @svc-ep-chains"},
		"svc-aff-pick-local-2": {"ip daddr . meta l4proto . th dport . numgen random mod 2 vmap @svc-local-ep-chains"},
	}
	for chain, rules := range want {
		if diff := cmp.Diff(rules, rulesOf(m, chain)); diff != "" {
			t.Errorf("chain %s (-want +got):\n%s", chain, diff)
		}
	}
	if got := elementsOf(m, MapLocalEndpointChains); len(got) != 2 || !strings.HasPrefix(got[0], "198.51.100.15 . tcp . 80 . 0x00000000 : goto svc-ep-") {
		t.Errorf("svc-local-ep-chains = %v, want the two local endpoints under the VIP", got)
	}
	if got := elementsOf(m, MapEndpoints); len(got) != 0 {
		t.Errorf("svc-eps has %v; affinity services choose endpoint chains", got)
	}
}

func endpointNameFor(key, ip string, port int) string {
	sp := servicePort{key: key}
	return sp.endpointName(netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)))
}

func TestAllowedRanges(t *testing.T) {
	p := netip.MustParsePrefix
	got := allowedRanges([]netip.Prefix{
		p("192.0.2.128/25"), p("192.0.2.0/24"), p("10.1.2.3/8"), p("10.0.0.0/8"),
		p("2001:db8::/32"), p("203.0.113.7/32"), p("::ffff:198.51.100.0/120"),
	})
	want := []netip.Prefix{p("10.0.0.0/8"), p("192.0.2.0/24"), p("198.51.100.0/24"), p("203.0.113.7/32")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("allowedRanges (-want +got):\n%s", diff)
	}
}

func TestNftDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{3 * time.Hour, "3h"},
		{10 * time.Minute, "10m"},
		{90 * time.Second, "1m30s"},
		{24 * time.Hour, "1d"},
		{26*time.Hour + 1500*time.Millisecond, "1d2h1s500ms"},
		{0, "0s"},
	} {
		if got := nftDuration(tt.d); got != tt.want {
			t.Errorf("nftDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// Chain and set names stay within the kernel's limit (NFT_CHAIN_MAXNAMELEN
// and NFT_SET_MAXNAMELEN, 256 with the NUL) for the longest Kubernetes
// names.
func TestNameLength(t *testing.T) {
	long := strings.Repeat("n", 63)
	s := svc(strings.Repeat("s", 63), lb.TypeLoadBalancer, "10.96.0.1", "198.51.100.1", tcp(65535, 65535))
	s.Service.Namespace = long
	s.Service.SessionAffinity = true
	s.Service.ExternalTrafficPolicy = lb.PolicyLocal
	s.Service.InternalTrafficPolicy = lb.PolicyLocal
	s.Service.ExternalIPs = []netip.Addr{addr("203.0.113.1")}
	s = withNodePorts(s, 65535)
	in := inputOf(fixture{svc: s, eps: []lb.Endpoint{{PodNamespace: long, PodName: "p", IP: addr("10.244.255.255"), Node: testNode, Ready: true}}})
	m := Compile(in)
	for _, n := range chainNames(m) {
		if len(n) > 255 {
			t.Errorf("chain name of %d bytes: %s", len(n), n)
		}
	}
	for _, s := range m.Sets {
		if len(s.Name) > 255 {
			t.Errorf("set name of %d bytes: %s", len(s.Name), s.Name)
		}
	}
}

func TestMapSize(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want uint32
	}{{0, 0}, {16383, 0}, {16384, 65536}, {32768, 65536}, {32769, 131072}, {200000, 524288}} {
		if got := mapSize(tt.n); got != tt.want {
			t.Errorf("mapSize(%d) = %d, want %d", tt.n, got, tt.want)
		}
		if got := mapSize(tt.n); got != 0 && int(got) < tt.n {
			t.Errorf("mapSize(%d) = %d is below the element count", tt.n, got)
		}
	}
}
