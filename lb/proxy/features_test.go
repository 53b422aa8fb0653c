package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/lb"
)

const (
	pick1   = "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-eps"
	pick2   = "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @svc-eps"
	pickL1  = "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @svc-local-eps"
	npPick1 = "dnat ip to meta l4proto . th dport . numgen random mod 1 map @svc-np-eps"
	npPick2 = "dnat ip to meta l4proto . th dport . numgen random mod 2 map @svc-np-eps"
	npPickL = "dnat ip to meta l4proto . th dport . numgen random mod 1 map @svc-np-local-eps"
)

// One case per feature of issue 11's service proxy: what Compile makes
// of it (the chains and elements that depend on the services).
func TestCompileFeatures(t *testing.T) {
	local, remote := ep("l", "10.244.1.2", testNode), ep("r", "10.244.2.2", "node2")
	nodePort := func(name, policy string, nps ...uint16) ServiceAddrs {
		s := withNodePorts(svc(name, lb.TypeNodePort, "10.96.0.10", "", tcp(80, 8080)), nps...)
		s.Service.ExternalTrafficPolicy = policy
		return s
	}
	noFlag := nodePort("np", "", 30080)
	noFlag.Service.NodePorts = false
	twoPorts := withNodePorts(svc("np", lb.TypeNodePort, "10.96.0.10", "", tcp(80, 8080), udp(53, 5353)), 0)
	headless := nodePort("np", "", 30080)
	headless.Service.Headless = true
	extName := nodePort("np", "", 30080)
	extName.Service.Type = lb.TypeExternalName
	external := func(policy string, ips ...string) ServiceAddrs {
		s := svc("ext", lb.TypeLoadBalancer, "10.96.0.10", "198.51.100.1", tcp(80, 8080))
		for _, a := range ips {
			s.Service.ExternalIPs = append(s.Service.ExternalIPs, addr(a))
		}
		s.Service.ExternalTrafficPolicy = policy
		return s
	}
	internal := svc("int", lb.TypeLoadBalancer, "10.96.0.10", "198.51.100.1", tcp(80, 8080))
	internal.Service.InternalTrafficPolicy = lb.PolicyLocal

	tests := []struct {
		name string
		in   Input
		want dynamic
	}{
		{name: "node port, policy Cluster", in: withEndpoints(nodePort("np", "", 30080), local, remote), want: dynamic{
			Chains: map[string][]string{"svc-np-pick-2": {npPick2}, "svc-pick-2": {pick2}},
			Elements: map[string][]string{
				MapEndpoints:         {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080"},
				SetHairpin:           {"10.244.1.2 . 10.244.1.2"},
				MapServices:          {"10.96.0.10 . tcp . 80 : goto svc-pick-2"},
				MapNodePorts:         {"tcp . 30080 : goto svc-np-pick-2"},
				MapNodePortEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.1.2 . 8080", "tcp . 30080 . 0x00000001 : 10.244.2.2 . 8080"},
			},
		}},
		{name: "node port, policy Local", in: withEndpoints(nodePort("np", lb.PolicyLocal, 30080), local, remote), want: dynamic{
			Chains: map[string][]string{
				"svc-np-local-2-1":    {"ip saddr 10.244.0.0/16 goto svc-np-pick-2", "fib saddr type local goto svc-np-pick-2", "goto svc-np-pick-local-1"},
				"svc-np-pick-2":       {npPick2},
				"svc-np-pick-local-1": {npPickL},
				"svc-pick-2":          {pick2},
			},
			Elements: map[string][]string{
				MapEndpoints:              {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080"},
				SetHairpin:                {"10.244.1.2 . 10.244.1.2"},
				MapServices:               {"10.96.0.10 . tcp . 80 : goto svc-pick-2"},
				MapNodePorts:              {"tcp . 30080 : goto svc-np-local-2-1"},
				MapNodePortEndpoints:      {"tcp . 30080 . 0x00000000 : 10.244.1.2 . 8080", "tcp . 30080 . 0x00000001 : 10.244.2.2 . 8080"},
				MapNodePortLocalEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.1.2 . 8080"},
			},
		}},
		{name: "node port, policy Local, no local endpoint", in: withEndpoints(nodePort("np", lb.PolicyLocal, 30080), remote), want: dynamic{
			Chains: map[string][]string{
				"svc-np-local-1-0": {"ip saddr 10.244.0.0/16 goto svc-np-pick-1", "fib saddr type local goto svc-np-pick-1", "drop"},
				"svc-np-pick-1":    {npPick1},
				"svc-pick-1":       {pick1},
			},
			Elements: map[string][]string{
				MapEndpoints:         {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080"},
				MapServices:          {"10.96.0.10 . tcp . 80 : goto svc-pick-1"},
				MapNodePorts:         {"tcp . 30080 : goto svc-np-local-1-0"},
				MapNodePortEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080"},
			},
		}},
		{name: "node port without endpoints", in: withEndpoints(nodePort("np", "", 30080)), want: dynamic{
			Chains: map[string][]string{},
			Elements: map[string][]string{
				MapFilter:          {"10.96.0.10 . tcp . 80 : goto svc-reject"},
				MapFilterNodePorts: {"tcp . 30080 : goto svc-reject"},
			},
		}},
		{name: "node ports without NodePorts, pending or missing", in: inputOf(
			fixture{svc: noFlag, eps: []lb.Endpoint{remote}}, fixture{svc: twoPorts, eps: []lb.Endpoint{remote}}), want: dynamic{
			Chains: map[string][]string{"svc-pick-1": {pick1}},
			Elements: map[string][]string{
				MapEndpoints: {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080", "10.96.0.10 . udp . 53 . 0x00000000 : 10.244.2.2 . 5353"},
				MapServices:  {"10.96.0.10 . tcp . 80 : goto svc-pick-1", "10.96.0.10 . udp . 53 : goto svc-pick-1"},
			},
		}},
		{name: "headless and ExternalName services are not proxied", in: inputOf(
			fixture{svc: headless, eps: []lb.Endpoint{remote}}, fixture{svc: extName, eps: []lb.Endpoint{remote}}),
			want: dynamic{Chains: map[string][]string{}, Elements: map[string][]string{}}},
		// An external IP that is also the VIP, or listed twice, is served once.
		{name: "external IPs, policy Cluster", in: withEndpoints(external("", "203.0.113.2", "198.51.100.1", "203.0.113.2"), local, remote), want: dynamic{
			Chains: map[string][]string{"svc-pick-2": {pick2}},
			Elements: map[string][]string{
				MapEndpoints: {
					"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
					"198.51.100.1 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "198.51.100.1 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
					"203.0.113.2 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "203.0.113.2 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
				},
				SetHairpin:  {"10.244.1.2 . 10.244.1.2"},
				MapServices: {"10.96.0.10 . tcp . 80 : goto svc-pick-2", "198.51.100.1 . tcp . 80 : goto svc-pick-2", "203.0.113.2 . tcp . 80 : goto svc-pick-2"},
			},
		}},
		{name: "external IPs, policy Local", in: withEndpoints(external(lb.PolicyLocal, "203.0.113.2"), local, remote), want: dynamic{
			Chains: map[string][]string{
				"svc-local-2-1":    {"ip saddr 10.244.0.0/16 goto svc-pick-2", "fib saddr type local goto svc-pick-2", "goto svc-pick-local-1"},
				"svc-pick-2":       {pick2},
				"svc-pick-local-1": {pickL1},
			},
			Elements: map[string][]string{
				MapEndpoints: {
					"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
					"198.51.100.1 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "198.51.100.1 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
					"203.0.113.2 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "203.0.113.2 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080",
				},
				SetHairpin:        {"10.244.1.2 . 10.244.1.2"},
				MapServices:       {"10.96.0.10 . tcp . 80 : goto svc-pick-2", "198.51.100.1 . tcp . 80 : goto svc-local-2-1", "203.0.113.2 . tcp . 80 : goto svc-local-2-1"},
				MapLocalEndpoints: {"198.51.100.1 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "203.0.113.2 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080"},
			},
		}},
		// The ClusterIP leads to the local endpoints only; the VIP is not
		// affected.
		{name: "internal traffic policy Local", in: withEndpoints(internal, local, remote), want: dynamic{
			Chains: map[string][]string{"svc-pick-2": {pick2}, "svc-pick-local-1": {pickL1}},
			Elements: map[string][]string{
				MapEndpoints:      {"198.51.100.1 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080", "198.51.100.1 . tcp . 80 . 0x00000001 : 10.244.2.2 . 8080"},
				SetHairpin:        {"10.244.1.2 . 10.244.1.2"},
				MapServices:       {"10.96.0.10 . tcp . 80 : goto svc-pick-local-1", "198.51.100.1 . tcp . 80 : goto svc-pick-2"},
				MapLocalEndpoints: {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.1.2 . 8080"},
			},
		}},
		{name: "internal traffic policy Local, no local endpoint", in: withEndpoints(internal, remote), want: dynamic{
			Chains: map[string][]string{"svc-pick-1": {pick1}},
			Elements: map[string][]string{
				MapEndpoints: {"198.51.100.1 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080"},
				MapServices:  {"10.96.0.10 . tcp . 80 : drop", "198.51.100.1 . tcp . 80 : goto svc-pick-1"},
			},
		}},
		{name: "terminating endpoint avoided while a ready one exists", in: withEndpoints(nodePort("np", "", 30080),
			remote, terminating("t", "10.244.2.3", "node2", true)), want: dynamic{
			Chains: map[string][]string{"svc-np-pick-1": {npPick1}, "svc-pick-1": {pick1}},
			Elements: map[string][]string{
				MapEndpoints:         {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080"},
				MapServices:          {"10.96.0.10 . tcp . 80 : goto svc-pick-1"},
				MapNodePorts:         {"tcp . 30080 : goto svc-np-pick-1"},
				MapNodePortEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080"},
			},
		}},
		{name: "only terminating endpoints: the serving ones", in: withEndpoints(nodePort("np", "", 30080),
			terminating("t", "10.244.2.3", "node2", true), terminating("u", "10.244.2.4", "node2", false)), want: dynamic{
			Chains: map[string][]string{"svc-np-pick-1": {npPick1}, "svc-pick-1": {pick1}},
			Elements: map[string][]string{
				MapEndpoints:         {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.3 . 8080"},
				MapServices:          {"10.96.0.10 . tcp . 80 : goto svc-pick-1"},
				MapNodePorts:         {"tcp . 30080 : goto svc-np-pick-1"},
				MapNodePortEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.2.3 . 8080"},
			},
		}},
		// Every endpoint: the ready remote one; the local ones: the
		// terminating local one (no local endpoint is ready).
		{name: "local fallback apart: remote ready, local terminating", in: withEndpoints(nodePort("np", lb.PolicyLocal, 30080),
			remote, terminating("t", "10.244.1.3", testNode, true)), want: dynamic{
			Chains: map[string][]string{
				"svc-np-local-1-1":    {"ip saddr 10.244.0.0/16 goto svc-np-pick-1", "fib saddr type local goto svc-np-pick-1", "goto svc-np-pick-local-1"},
				"svc-np-pick-1":       {npPick1},
				"svc-np-pick-local-1": {npPickL},
				"svc-pick-1":          {pick1},
			},
			Elements: map[string][]string{
				MapEndpoints:              {"10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080"},
				SetHairpin:                {"10.244.1.3 . 10.244.1.3"},
				MapServices:               {"10.96.0.10 . tcp . 80 : goto svc-pick-1"},
				MapNodePorts:              {"tcp . 30080 : goto svc-np-local-1-1"},
				MapNodePortEndpoints:      {"tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080"},
				MapNodePortLocalEndpoints: {"tcp . 30080 . 0x00000000 : 10.244.1.3 . 8080"},
			},
		}},
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

// Node port conflicts are reported like address conflicts; the first
// service by namespace/name keeps the port (per protocol).
func TestSkippedNodePorts(t *testing.T) {
	a := withNodePorts(svc("a", lb.TypeNodePort, "10.96.0.1", "", tcp(80, 8080), udp(53, 53)), 30080, 30053)
	b := withNodePorts(svc("b", lb.TypeNodePort, "10.96.0.2", "", tcp(80, 8080), udp(53, 53), tcp(81, 8081)), 30080, 30080, 30053)
	c := svc("c", lb.TypeClusterIP, "10.96.0.3", "", tcp(80, 8080), tcp(80, 8081)) // the same port twice
	c.Service.ExternalIPs = []netip.Addr{addr("10.96.0.1"), addr("2001:db8::1")}   // a's ClusterIP; IPv6
	in := inputOf(fixture{svc: b}, fixture{svc: a}, fixture{svc: c})
	in.NodePortAddresses = nil
	want := []string{
		"service default/b: node port 30080/tcp is already served for default/a; skipped",
		"service default/c: 2001:db8::1 is IPv6, which the proxy does not serve yet; skipped",
		"service default/c: 10.96.0.1:80/tcp is already served for default/a; skipped",
		"service default/c: port 80/tcp is listed twice; skipped",
	}
	if diff := cmp.Diff(want, Skipped(in)); diff != "" {
		t.Errorf("Skipped (-want +got):\n%s", diff)
	}
	wantNP := []string{
		"tcp . 30053 : goto svc-reject",
		"tcp . 30080 : goto svc-reject",
		"udp . 30053 : goto svc-reject",
		"udp . 30080 : goto svc-reject",
	}
	if diff := cmp.Diff(wantNP, elementsOf(Compile(in), MapFilterNodePorts)); diff != "" {
		t.Errorf("svc-filter-nodeports (-want +got):\n%s", diff)
	}
}

// svc-nodeport-addrs: the IPv4 prefixes merged, without loopback.
func TestNodePortAddrs(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tt := range []struct {
		in   []netip.Prefix
		want []string
	}{
		{nil, nil},
		{[]netip.Prefix{p("0.0.0.0/0")}, []string{"0.0.0.0-126.255.255.255", "128.0.0.0/1"}},
		{[]netip.Prefix{p("127.0.0.1/32")}, nil},
		{[]netip.Prefix{p("192.168.50.7/24"), p("192.168.50.128/25"), p("192.168.51.0/24"), p("10.1.2.3/32")}, []string{"10.1.2.3", "192.168.50.0/23"}},
		{[]netip.Prefix{p("126.0.0.0/7"), p("fd00::/64"), p("::ffff:203.0.113.0/120")}, []string{"126.0.0.0/8", "203.0.113.0/24"}},
		{[]netip.Prefix{p("255.255.255.255/32"), p("255.255.255.0/24")}, []string{"255.255.255.0/24"}},
	} {
		m := Compile(Input{NodePortAddresses: tt.in})
		if diff := cmp.Diff(tt.want, elementsOf(m, SetNodePortAddrs)); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.in, diff)
		}
	}
	// The kernel elements: start, and an end one past the range.
	rs, _ := nodePortRanges([]netip.Prefix{p("0.0.0.0/0")})
	e := rangeElement(rs[0])
	if k := e.Kernel(); len(k) != 2 || string(k[1].Key) != "\x7f\x00\x00\x00" || !k[1].IntervalEnd {
		t.Errorf("0.0.0.0-126.255.255.255: %+v", k)
	}
	if e := rangeElement(rs[1]); e.KernelLen() != 1 {
		t.Errorf("128.0.0.0/1 runs to the last address, no end element: %+v", e.Kernel())
	}
}

// sessionAffinityConfig's timeout is on every entry's endpoint chains,
// node ports included.
func TestAffinityTimeoutNodePort(t *testing.T) {
	s := withNodePorts(svc("st", lb.TypeNodePort, "10.96.0.1", "", tcp(80, 8080)), 30080)
	s.Service.SessionAffinity = true
	s.Service.AffinityTimeout = 90 * time.Second
	m := Compile(withEndpoints(s, ep("a", "10.244.2.2", "node2")))
	key := "default/st/tcp/80"
	epChain := "svc-ep-" + endpointNameFor(key, "10.244.2.2", 8080)
	if diff := cmp.Diff([]string{
		"update @svc-aff-" + endpointNameFor(key, "10.244.2.2", 8080) + " { ip saddr timeout 1m30s }",
		"meta l4proto tcp dnat ip to 10.244.2.2:8080",
	}, rulesOf(m, epChain)); diff != "" {
		t.Errorf("endpoint chain (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tcp . 30080 : goto svc-sticky-np-" + hashName(key) + "-" + key}, elementsOf(m, MapNodePorts)); diff != "" {
		t.Errorf("svc-nodeports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ip saddr @svc-aff-" + endpointNameFor(key, "10.244.2.2", 8080) + " goto " + epChain, "goto svc-np-aff-pick-1"},
		rulesOf(m, "svc-sticky-np-"+hashName(key)+"-"+key)); diff != "" {
		t.Errorf("sticky chain (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"meta l4proto . th dport . numgen random mod 1 vmap @svc-np-ep-chains"}, rulesOf(m, "svc-np-aff-pick-1")); diff != "" {
		t.Errorf("svc-np-aff-pick-1 (-want +got):\n%s", diff)
	}
}

// PassMark lets packets a drain has marked for the old owner past the
// filter dispatch, ahead of every other rule, and only when it is set.
func TestPassMark(t *testing.T) {
	in := withEndpoints(svc("a", lb.TypeLoadBalancer, "10.96.0.10", "198.51.100.1", tcp(80, 8080)), ep("r", "10.244.2.2", "node2"))
	without := rulesOf(Compile(in), ChainFilterPrerouting)
	in.PassMark = 0xff00
	with := rulesOf(Compile(in), ChainFilterPrerouting)
	if len(with) != len(without)+1 {
		t.Fatalf("PassMark adds one rule: %q against %q", with, without)
	}
	if want := "meta mark & 0x0000ff00 != 0x00000000 accept"; with[0] != want {
		t.Errorf("first rule %q, want %q", with[0], want)
	}
	if diff := cmp.Diff(without, with[1:]); diff != "" {
		t.Errorf("the other rules change (-without +with):\n%s", diff)
	}
}
