package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// checkSame fails when got differs from want in any way: sets, elements
// (texts and kernel bytes), chains, rules, and their order.
func checkSame(t *testing.T, what string, got, want nft.Model) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		t.Fatalf("%s: model differs (-want +got):\n%s", what, diff)
	}
	// Same text: find what differs.
	if len(got.Sets) != len(want.Sets) || len(got.Chains) != len(want.Chains) {
		t.Fatalf("%s: %d sets, %d chains; want %d, %d", what, len(got.Sets), len(got.Chains), len(want.Sets), len(want.Chains))
	}
	for i := range want.Sets {
		g, w := got.Sets[i], want.Sets[i]
		if g.Name != w.Name {
			t.Fatalf("%s: set %d is %s, want %s", what, i, g.Name, w.Name)
		}
		ge, we := g.Flat(), w.Flat()
		if len(ge) != len(we) {
			t.Fatalf("%s: set %s has %d elements, want %d", what, g.Name, len(ge), len(we))
		}
		for j := range we {
			if !reflect.DeepEqual(ge[j], we[j]) {
				t.Fatalf("%s: set %s element %d is %q %+v, want %q %+v", what, g.Name, j, ge[j].Text(), ge[j].Kernel(), we[j].Text(), we[j].Kernel())
			}
		}
		if (g.Elements == nil) != (w.Elements == nil) || (g.Parts == nil) != (w.Parts == nil) {
			t.Fatalf("%s: set %s elements/parts nil %v/%v, want %v/%v", what, g.Name, g.Elements == nil, g.Parts == nil, w.Elements == nil, w.Parts == nil)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: set %s differs: %+v, want %+v", what, g.Name, g.Spec, w.Spec)
		}
	}
	for i := range want.Chains {
		if !reflect.DeepEqual(got.Chains[i], want.Chains[i]) {
			t.Fatalf("%s: chain %d is %s, want %s (or their rules' expressions differ)", what, i, got.Chains[i].Name, want.Chains[i].Name)
		}
	}
	t.Fatalf("%s: models differ", what)
}

// fingerprint is everything of m that a Compiler could modify in place
// after returning it: the texts of its rules and elements and the bytes
// sent to the kernel for each element.
func fingerprint(m nft.Model) string {
	var b strings.Builder
	b.WriteString(m.String())
	for _, s := range m.Sets {
		fmt.Fprintf(&b, "set %s\n", s.Name)
		for e := range s.All() {
			fmt.Fprintf(&b, "%s:", e.Text())
			for _, k := range e.Kernel() {
				fmt.Fprintf(&b, " %x-%x-%x-%v-%v", k.Key, k.KeyEnd, k.Val, k.IntervalEnd, k.VerdictData)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// A Compiler driven through random changes gives, after each, exactly the
// Model and the notes of the pure Compile and Skipped (a fresh Compiler):
// the executable specification of the incremental one. The Models it
// returned before stay as they were (they share elements with the new one).
func TestCompilerIncremental(t *testing.T) {
	steps := 400
	if testing.Short() {
		steps = 100
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			g := newGen(r)
			c := NewCompiler()
			var prev nft.Model
			var prevPrint string
			var reused, conflicts, sticky, local, nodePorts, npConflicts int
			for step := range steps {
				what := g.mutate()
				in := g.input()
				got := c.Compile(in)
				label := fmt.Sprintf("step %d (%s)", step, what)
				checkSame(t, label, got, Compile(in))
				if diff := cmp.Diff(Skipped(in), c.Skipped()); diff != "" {
					t.Fatalf("%s: Skipped (-want +got):\n%s", label, diff)
				}
				if p := fingerprint(prev); step > 0 && p != prevPrint {
					t.Fatalf("%s: the Model of the step before changed:\n%s", label, cmp.Diff(prevPrint, p))
				}
				prev, prevPrint = got, fingerprint(got)
				if err := got.Validate(); err != nil && !g.dupKeys() {
					t.Fatalf("%s: Validate: %v", label, err)
				}
				n := 0
				for _, e := range c.frags {
					n += len(e.ports)
				}
				reused += n - c.built
				for _, note := range c.Skipped() {
					if strings.Contains(note, "already served") {
						conflicts++
					}
					if strings.Contains(note, "node port") && strings.Contains(note, "already served") {
						npConflicts++
					}
				}
				for _, s := range got.Sets {
					switch {
					case s.Name == MapEndpointChains && s.Len() > 0:
						sticky++
					case (s.Name == MapLocalEndpoints || s.Name == MapLocalEndpointChains) && s.Len() > 0:
						local++
					case s.Name == MapNodePorts && s.Len() > 0:
						nodePorts++
					}
				}
			}
			// The changes exercised what they should.
			if reused == 0 || conflicts == 0 || sticky == 0 || local == 0 || nodePorts == 0 || npConflicts == 0 {
				t.Errorf("reused %d fragments, %d conflicts (%d of node ports), %d steps with affinity, %d with local endpoints, %d with node ports: all should be > 0",
					reused, conflicts, npConflicts, sticky, local, nodePorts)
			}
			t.Logf("reused %d fragments, %d conflicts (%d of node ports), %d steps with affinity, %d with local endpoints, %d with node ports",
				reused, conflicts, npConflicts, sticky, local, nodePorts)
		})
	}
}

// The Compiler does not depend on the identity of the Input's slices: the
// same Input modified in place between calls is compiled anew.
func TestCompilerInPlace(t *testing.T) {
	in := bigInput(50, 4)
	c := NewCompiler()
	c.Compile(in)
	k := in.Services[7].Service.Key()
	in.Endpoints[k][2].IP = netip.MustParseAddr("10.250.0.9")
	checkSame(t, "endpoint address", c.Compile(in), Compile(in))
	in.Endpoints[k][1].Ready = false
	checkSame(t, "endpoint not ready", c.Compile(in), Compile(in))
	in.Services[9].Service.Ports[0].Port = 81
	checkSame(t, "port", c.Compile(in), Compile(in))
	in.Services[9].Service.SourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	checkSame(t, "source ranges", c.Compile(in), Compile(in))
	in.Services[9].Service.SourceRanges[0] = netip.MustParsePrefix("198.51.100.0/24")
	checkSame(t, "source range in place", c.Compile(in), Compile(in))
	in.Services[3].ClusterIP = in.Services[2].ClusterIP
	checkSame(t, "conflict", c.Compile(in), Compile(in))
	in.Services[2].ClusterIP = netip.Addr{}
	checkSame(t, "conflict resolved", c.Compile(in), Compile(in))
	in.Services[4].Service.NodePorts = true
	in.Services[4].NodePorts = []uint16{30004}
	checkSame(t, "node port", c.Compile(in), Compile(in))
	in.Services[4].NodePorts[0] = 30005
	checkSame(t, "node port in place", c.Compile(in), Compile(in))
	in.Services[4].Service.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	checkSame(t, "external IP", c.Compile(in), Compile(in))
	in.Services[4].Service.ExternalIPs[0] = netip.MustParseAddr("203.0.113.2")
	checkSame(t, "external IP in place", c.Compile(in), Compile(in))
	in.Endpoints[k][0].Ready, in.Endpoints[k][0].Serving, in.Endpoints[k][0].Terminating = false, true, true
	checkSame(t, "endpoint terminating", c.Compile(in), Compile(in))
	in.Services[4].Service.InternalTrafficPolicy = lb.PolicyLocal
	checkSame(t, "internal traffic policy", c.Compile(in), Compile(in))
	in.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	checkSame(t, "node port addresses", c.Compile(in), Compile(in))
	in.NodePortAddresses[0] = netip.MustParsePrefix("192.0.2.0/24")
	checkSame(t, "node port addresses in place", c.Compile(in), Compile(in))
}

// The Compiler's backends are lb.Backends' and lb.LocalBackends' of the
// IPv4 endpoints (the proxy is IPv4 only: an IPv6 ready endpoint does not
// keep it from falling back to IPv4 terminating ones), sorted and unique.
func TestCompilerBackends(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	c := NewCompiler()
	for i := range 500 {
		g := newGen(r)
		sa := g.service(0)
		eps := g.endpoints()
		node := g.nodes[r.IntN(len(g.nodes))]
		var v4 []lb.Endpoint
		for _, e := range eps {
			if e.IP.Unmap().Is4() {
				v4 = append(v4, e)
			}
		}
		bs := lb.Backends(sa.Service, v4)
		ls := lb.LocalBackends(sa.Service, v4, node)
		for p := range sa.Service.Ports {
			var all, local []uint64
			for _, b := range bs[p] {
				if ap := netip.AddrPortFrom(b.IP.Unmap(), b.Port); ap.Addr().Is4() {
					all = append(all, packAddrPort(ap.Addr(), ap.Port()))
				}
			}
			for _, b := range ls[p] {
				if ap := netip.AddrPortFrom(b.IP.Unmap(), b.Port); ap.Addr().Is4() {
					local = append(local, packAddrPort(ap.Addr(), ap.Port()))
				}
			}
			slices.Sort(all)
			slices.Sort(local)
			all, local = slices.Compact(all), slices.Compact(local)
			c.backends(node, &sa.Service.Ports[p], eps)
			if !slices.Equal(all, c.sig.all) || !slices.Equal(local, c.sig.local) {
				t.Fatalf("case %d port %d: backends %v %v, want %v %v", i, p, c.sig.all, c.sig.local, all, local)
			}
		}
	}
	for _, ap := range []netip.AddrPort{
		netip.MustParseAddrPort("0.0.0.0:0"), netip.MustParseAddrPort("10.0.0.1:80"),
		netip.MustParseAddrPort("10.0.0.1:81"), netip.MustParseAddrPort("255.255.255.255:65535"),
	} {
		if got := unpackAddrPort(packAddrPort(ap.Addr(), ap.Port())); got != ap {
			t.Errorf("unpack(pack(%v)) = %v", ap, got)
		}
	}
}

// Only what changed is compiled again.
func TestCompilerReuses(t *testing.T) {
	in := bigInput(200, 5)
	c := NewCompiler()
	c.Compile(in)
	if c.built != 200 {
		t.Fatalf("first call compiled %d service ports, want 200", c.built)
	}
	c.Compile(in)
	if c.built != 0 {
		t.Errorf("same input: compiled %d service ports, want 0", c.built)
	}
	one := withOneChange(in, 42)
	checkSame(t, "one change", c.Compile(one), Compile(one))
	if c.built != 1 {
		t.Errorf("one changed service: compiled %d service ports, want 1", c.built)
	}
	// A new ClusterCIDR is in every Local VIP's chains: all anew.
	in.ClusterCIDR = netip.MustParsePrefix("10.0.0.0/9")
	checkSame(t, "new cluster CIDR", c.Compile(in), Compile(in))
	if c.built != 200 {
		t.Errorf("new cluster CIDR: compiled %d service ports, want 200", c.built)
	}
}

// The Compiler forgets services that are gone.
func TestCompilerForgets(t *testing.T) {
	c := NewCompiler()
	c.Compile(bigInput(100, 3))
	if len(c.frags) != 100 {
		t.Fatalf("%d services cached, want 100", len(c.frags))
	}
	in := bigInput(10, 3)
	checkSame(t, "fewer services", c.Compile(in), Compile(in))
	if len(c.frags) != 10 {
		t.Errorf("%d services cached, want 10", len(c.frags))
	}
	checkSame(t, "nothing", c.Compile(Input{}), Compile(Input{}))
	if len(c.frags) != 0 {
		t.Errorf("%d services cached, want 0", len(c.frags))
	}
}

// gen makes random Inputs and changes them: few addresses, ports and
// names, so that conflicts, duplicates and reuse are frequent.
type gen struct {
	r     *rand.Rand
	in    Input
	nodes []string
}

func newGen(r *rand.Rand) *gen {
	g := &gen{r: r, nodes: []string{"node1", "node2", ""}}
	g.in = Input{
		Node:        "node1",
		ClusterCIDR: testClusterCIDR,
		PodSubnet:   testPodSubnet,
		WGIface:     testWG,
		Endpoints:   map[lb.ServiceKey][]lb.Endpoint{},

		NodePortAddresses: g.nodePortAddrs(),
	}
	for range r.IntN(12) {
		g.addService()
	}
	return g
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) addr(pool ...string) netip.Addr {
	s := g.pick(pool...)
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func (g *gen) cip() netip.Addr {
	return g.addr("", "10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "::ffff:10.96.0.6", "fd00::1")
}

func (g *gen) vip() netip.Addr {
	return g.addr("", "198.51.100.1", "198.51.100.2", "198.51.100.3", "10.96.0.1", "2001:db8::1")
}

func (g *gen) nodePortAddrs() []netip.Prefix {
	var out []netip.Prefix
	for range g.r.IntN(3) {
		out = append(out, netip.MustParsePrefix(g.pick("192.168.50.0/24", "0.0.0.0/0", "127.0.0.1/32", "fd00::/64", "10.0.0.0/8")))
	}
	return out
}

// nodePorts returns node ports for n service ports: few numbers, so that
// they collide.
func (g *gen) nodePorts(n int) []uint16 {
	var out []uint16
	for range n + g.r.IntN(2) - 1 {
		out = append(out, []uint16{0, 30000, 30001, 30002}[g.r.IntN(4)])
	}
	return out
}

func (g *gen) externalIPs() []netip.Addr {
	var out []netip.Addr
	for range g.r.IntN(3) {
		out = append(out, g.addr("203.0.113.1", "203.0.113.2", "198.51.100.1", "10.96.0.2", "2001:db8::2", "::ffff:203.0.113.3"))
	}
	return out
}

func (g *gen) port() lb.ServicePort {
	p := lb.ServicePort{
		Protocol: g.pick("TCP", "TCP", "UDP", "", "tcp", "SCTP", "ICMP"),
		Port:     uint16([]int{80, 443, 53, 8080}[g.r.IntN(4)]),
	}
	switch g.r.IntN(4) {
	case 0:
		p.TargetPort = intstr.FromString("http")
	case 1:
		p.TargetPort = intstr.FromInt32(int32(8000 + g.r.IntN(3)))
	case 2:
		p.TargetPort = intstr.FromInt32(0)
	}
	return p
}

func (g *gen) ranges() []netip.Prefix {
	var out []netip.Prefix
	for range g.r.IntN(4) {
		out = append(out, netip.MustParsePrefix(g.pick("192.0.2.0/24", "192.0.2.128/25", "203.0.113.7/32", "10.1.2.3/8", "2001:db8::/32", "::ffff:198.51.100.0/120", "0.0.0.0/0")))
	}
	return out
}

func (g *gen) service(i int) ServiceAddrs {
	s := ServiceAddrs{Service: lb.Service{
		Namespace: g.pick("default", "kube-system"),
		Name:      fmt.Sprintf("s%d", g.r.IntN(10)),
		Type:      g.pick(lb.TypeLoadBalancer, lb.TypeLoadBalancer, lb.TypeClusterIP, lb.TypeNodePort),
	}, ClusterIP: g.cip(), VIP: g.vip()}
	switch g.r.IntN(12) {
	case 0:
		s.Service.Type = lb.TypeExternalName
	case 1:
		s.Service.Headless = true
	}
	for range 1 + g.r.IntN(3) {
		s.Service.Ports = append(s.Service.Ports, g.port())
	}
	s.Service.NodePorts = s.Service.Type == lb.TypeNodePort || s.Service.Type == lb.TypeLoadBalancer && g.r.IntN(2) == 0
	s.NodePorts = g.nodePorts(len(s.Service.Ports))
	s.Service.ExternalIPs = g.externalIPs()
	g.tweak(&s)
	return s
}

// tweak changes the policies of a service at random.
func (g *gen) tweak(s *ServiceAddrs) {
	s.Service.ExternalTrafficPolicy = g.pick(lb.PolicyCluster, lb.PolicyLocal, "")
	s.Service.InternalTrafficPolicy = g.pick(lb.PolicyCluster, lb.PolicyLocal, "", "")
	s.Service.SessionAffinity = g.r.IntN(3) == 0
	s.Service.AffinityTimeout = []time.Duration{0, 10 * time.Minute, 3 * time.Hour}[g.r.IntN(3)]
	s.Service.SourceRanges = nil
	if g.r.IntN(3) == 0 {
		s.Service.SourceRanges = g.ranges()
	}
}

func (g *gen) endpoint() lb.Endpoint {
	e := lb.Endpoint{
		PodNamespace: "default", PodName: fmt.Sprintf("p%d", g.r.IntN(100)),
		IP:   g.addr("10.244.1.1", "10.244.1.2", "10.244.2.1", "10.244.2.2", "10.244.3.1", "::ffff:10.244.1.3", "fd00::5", ""),
		Node: g.pick("node1", "node1", "node2", ""),
	}
	g.condition(&e)
	if g.r.IntN(2) == 0 {
		e.Ports = map[string]uint16{g.pick("http", "metrics"): uint16(9000 + g.r.IntN(2))}
	}
	return e
}

// condition sets the endpoint's Ready, Serving and Terminating as the
// EndpointSlice controller would (mostly ready; sometimes terminating,
// serving or not; sometimes not ready).
func (g *gen) condition(e *lb.Endpoint) {
	switch g.r.IntN(8) {
	case 0:
		e.Ready, e.Serving, e.Terminating = false, false, false
	case 1:
		e.Ready, e.Serving, e.Terminating = false, true, true
	case 2:
		e.Ready, e.Serving, e.Terminating = false, false, true
	default:
		e.Ready, e.Serving, e.Terminating = true, true, false
	}
}

func (g *gen) endpoints() []lb.Endpoint {
	var out []lb.Endpoint
	for range g.r.IntN(6) {
		out = append(out, g.endpoint())
	}
	return out
}

func (g *gen) addService() {
	s := g.service(len(g.in.Services))
	g.in.Services = append(g.in.Services, s)
	if eps := g.endpoints(); eps != nil || g.r.IntN(2) == 0 {
		g.in.Endpoints[s.Service.Key()] = eps
	}
}

func (g *gen) dupKeys() bool {
	seen := map[lb.ServiceKey]bool{}
	for _, s := range g.in.Services {
		if seen[s.Service.Key()] {
			return true
		}
		seen[s.Service.Key()] = true
	}
	return false
}

// input returns a copy of the current input (the Compiler must not depend
// on it staying the same, so the next changes are made to a new copy).
func (g *gen) input() Input {
	in := g.in
	in.Services = slices.Clone(g.in.Services)
	in.Endpoints = make(map[lb.ServiceKey][]lb.Endpoint, len(g.in.Endpoints))
	for k, v := range g.in.Endpoints {
		in.Endpoints[k] = slices.Clone(v)
	}
	return in
}

// mutate makes one random change and says which.
func (g *gen) mutate() string {
	r := g.r
	n := len(g.in.Services)
	i := 0
	if n > 0 {
		i = r.IntN(n)
	}
	// The changes are made to fresh copies of what they change.
	g.in.Services = slices.Clone(g.in.Services)
	svc := func() *ServiceAddrs {
		s := &g.in.Services[i]
		s.Service.Ports = slices.Clone(s.Service.Ports)
		s.Service.SourceRanges = slices.Clone(s.Service.SourceRanges)
		s.Service.ExternalIPs = slices.Clone(s.Service.ExternalIPs)
		s.NodePorts = slices.Clone(s.NodePorts)
		return s
	}
	setEps := func(k lb.ServiceKey, f func([]lb.Endpoint) []lb.Endpoint) {
		m := make(map[lb.ServiceKey][]lb.Endpoint, len(g.in.Endpoints))
		for kk, v := range g.in.Endpoints {
			m[kk] = v
		}
		m[k] = f(slices.Clone(m[k]))
		g.in.Endpoints = m
	}
	switch c := r.IntN(21); {
	case c < 3 || n == 0:
		g.addService()
		return "add service"
	case c < 5:
		k := g.in.Services[i].Service.Key()
		g.in.Services = slices.Delete(g.in.Services, i, i+1)
		if r.IntN(2) == 0 {
			m := map[lb.ServiceKey][]lb.Endpoint{}
			for kk, v := range g.in.Endpoints {
				if kk != k {
					m[kk] = v
				}
			}
			g.in.Endpoints = m
		}
		return "remove service"
	case c < 9:
		k := g.in.Services[i].Service.Key()
		setEps(k, func(eps []lb.Endpoint) []lb.Endpoint {
			switch {
			case len(eps) == 0 || r.IntN(3) == 0:
				return append(eps, g.endpoint())
			case r.IntN(2) == 0:
				j := r.IntN(len(eps))
				return slices.Delete(eps, j, j+1)
			default:
				j := r.IntN(len(eps))
				switch r.IntN(3) {
				case 0:
					g.condition(&eps[j])
				case 1:
					eps[j].Node = g.pick(g.nodes...)
				default:
					eps[j].IP = g.endpoint().IP
				}
				return eps
			}
		})
		return "endpoints"
	case c < 10:
		setEps(g.in.Services[i].Service.Key(), func([]lb.Endpoint) []lb.Endpoint { return nil })
		return "no endpoints"
	case c < 12:
		g.tweak(svc())
		return "policies"
	case c < 13:
		s := svc()
		s.Service.SessionAffinity = !s.Service.SessionAffinity
		return "affinity"
	case c < 14:
		s := svc()
		s.ClusterIP, s.VIP = g.cip(), g.vip()
		return "addresses"
	case c < 15:
		s := svc()
		if r.IntN(2) == 0 {
			s.Service.Ports = append(s.Service.Ports, g.port())
		} else {
			s.Service.Ports[r.IntN(len(s.Service.Ports))] = g.port()
		}
		return "ports"
	case c < 16:
		s := svc()
		switch r.IntN(5) {
		case 0:
			s.Service.Headless = !s.Service.Headless
		case 1:
			s.Service.Type = lb.TypeExternalName
		default:
			s.Service.Type = g.pick(lb.TypeLoadBalancer, lb.TypeClusterIP, lb.TypeNodePort)
		}
		return "type"
	case c < 17:
		r.Shuffle(n, func(a, b int) { g.in.Services[a], g.in.Services[b] = g.in.Services[b], g.in.Services[a] })
		return "order"
	case c < 18:
		s := svc()
		s.Service.Name = fmt.Sprintf("s%d", r.IntN(10))
		return "rename"
	case c < 19:
		s := svc()
		switch r.IntN(3) {
		case 0:
			s.NodePorts = g.nodePorts(len(s.Service.Ports))
		case 1:
			s.Service.NodePorts = !s.Service.NodePorts
		default:
			s.Service.ExternalIPs = g.externalIPs()
		}
		return "node ports, external IPs"
	default:
		switch r.IntN(5) {
		case 4:
			g.in.NodePortAddresses = g.nodePortAddrs()
		case 0:
			g.in.Node = g.pick(g.nodes...)
		case 1:
			g.in.ClusterCIDR = []netip.Prefix{testClusterCIDR, {}, netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/64")}[r.IntN(4)]
		case 2:
			g.in.PodSubnet = []netip.Prefix{testPodSubnet, {}}[r.IntN(2)]
		default:
			g.in.WGIface = g.pick(testWG, "")
		}
		return "globals"
	}
}
