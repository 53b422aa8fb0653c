package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/firewall"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
)

// bigInput is services LoadBalancer services (every third with policy
// Local) with one TCP port and endpoints endpoints each, spread over 10
// nodes.
func bigInput(services, endpoints int) Input {
	in := Input{
		Node:        "node0",
		ClusterCIDR: netip.MustParsePrefix("10.0.0.0/8"),
		PodSubnet:   netip.MustParsePrefix("10.0.0.0/16"),
		WGIface:     "nlwg0",
		Endpoints:   make(map[lb.ServiceKey][]lb.Endpoint, services),
	}
	for i := range services {
		s := svc(fmt.Sprintf("svc-%05d", i), lb.TypeLoadBalancer,
			netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}).String(),
			netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}).String(),
			tcp(80, 8080))
		if i%3 == 0 {
			s.Service.ExternalTrafficPolicy = lb.PolicyLocal
		}
		in.Services = append(in.Services, s)
		var eps []lb.Endpoint
		for j := range endpoints {
			k := i*endpoints + j
			node := k % 10
			eps = append(eps, lb.Endpoint{
				PodNamespace: "default", PodName: fmt.Sprintf("svc-%05d-%d", i, j),
				IP:   netip.AddrFrom4([4]byte{10, byte(node), byte(k >> 8), byte(k)}),
				Node: fmt.Sprintf("node%d", node), Ready: true,
			})
		}
		in.Endpoints[s.Service.Key()] = eps
	}
	return in
}

// withNodePortsAll gives every service of in a node port (first+i for the
// i-th), as LoadBalancer services have by default.
func withNodePortsAll(in Input, first uint16) Input {
	in.Services = slices.Clone(in.Services)
	for i := range in.Services {
		s := &in.Services[i]
		s.Service.NodePorts = true
		s.NodePorts = []uint16{first + uint16(i)}
	}
	in.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	return in
}

// withOneChange returns in with the first endpoint of one service moved to
// another address (a pod replaced).
func withOneChange(in Input, which int) Input {
	out := in
	out.Endpoints = make(map[lb.ServiceKey][]lb.Endpoint, len(in.Endpoints))
	for k, v := range in.Endpoints {
		out.Endpoints[k] = v
	}
	k := in.Services[which].Service.Key()
	eps := append([]lb.Endpoint(nil), in.Endpoints[k]...)
	eps[0].IP = netip.MustParseAddr("10.250.0.1")
	out.Endpoints[k] = eps
	return out
}

// BenchmarkCompile is the pure compile of 10,000 services with 10
// endpoints each.
func BenchmarkCompile(b *testing.B) {
	in := bigInput(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		Compile(in)
	}
}

// BenchmarkCompiler is the incremental compile of the same input:
// "one-change" recompiles with a warm Compiler after one service's
// endpoint changed (alternating between two inputs, as BenchmarkApply's
// one-change-with-compile does), "unchanged" the same input again.
func BenchmarkCompiler(b *testing.B) {
	in := bigInput(10000, 10)
	b.Run("one-change", func(b *testing.B) {
		ins := []Input{withOneChange(in, 4242), in}
		c := NewCompiler()
		c.Compile(in)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Compile(ins[i%2])
			i++
		}
	})
	b.Run("one-change-nodeports", func(b *testing.B) {
		in := withNodePortsAll(in, 40000)
		ins := []Input{withOneChange(in, 4242), in}
		c := NewCompiler()
		c.Compile(in)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.Compile(ins[i%2])
			i++
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		c := NewCompiler()
		c.Compile(in)
		b.ReportAllocs()
		for b.Loop() {
			c.Compile(in)
		}
	})
}

// BenchmarkCompilerHeap reports the heap held (after a GC) by the Model of
// a pure Compile of 10,000 services x 10 endpoints (model-MB), and by a
// Compiler together with the last Model it returned, after a first
// compile and after 20 one-change compiles (compiler-MB,
// compiler-after-changes-MB): the Compiler's own cost is the difference.
func BenchmarkCompilerHeap(b *testing.B) {
	in := bigInput(10000, 10)
	ins := []Input{withOneChange(in, 4242), in}
	var model, first, later uint64
	for b.Loop() {
		model = heldBy(func() any { return Compile(in) })
		first = heldBy(func() any {
			c := NewCompiler()
			return []any{c, c.Compile(in)}
		})
		later = heldBy(func() any {
			c := NewCompiler()
			m := c.Compile(in)
			for i := range 20 {
				m = c.Compile(ins[i%2])
			}
			return []any{c, m}
		})
	}
	b.ReportMetric(float64(model)/(1<<20), "model-MB")
	b.ReportMetric(float64(first)/(1<<20), "compiler-MB")
	b.ReportMetric(float64(later)/(1<<20), "compiler-after-changes-MB")
}

// heldBy returns the heap that what f returns holds.
func heldBy(f func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := f()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(x)
	return after.HeapAlloc - before.HeapAlloc
}

// BenchmarkApply installs the compiled model of 10,000 services x 10
// endpoints (with the base ruleset) in a test network namespace: "full" is
// a whole-table replacement, "one-change" the incremental Apply after one
// service's endpoint changed (alternating between two models), and
// "one-change-with-compile" the same including Compile. Needs root.
func BenchmarkApply(b *testing.B) {
	nfttest.NeedRoot(b)
	in := bigInput(10000, 10)
	base := firewall.Ruleset(firewall.Config{ClusterCIDR: in.ClusterCIDR, PodSubnet: in.PodSubnet, WGIface: in.WGIface})
	m1 := nft.Merge(base, Compile(in))
	m2 := nft.Merge(base, Compile(withOneChange(in, 4242)))
	b.Logf("model: %d chains, %d sets, %d set elements", len(m1.Chains), len(m1.Sets), countElements(m1))

	b.Run("full", func(b *testing.B) {
		ns := nfttest.NewNS(b)
		a := nsApplier(b, ns)
		for b.Loop() {
			a.Invalidate()
			if err := a.Apply(m1); err != nil {
				b.Fatalf("Apply: %v", err)
			}
		}
		st := a.LastApply()
		b.ReportMetric(float64(st.Messages), "msgs")
	})
	// The repair pass's check (every --resync-interval): "drift" when no
	// nftables transaction was committed since the last check (the ruleset
	// generation says so), "drift-after-commit" after one (anyone's, here
	// a table of another name), which lists the whole table back from the
	// kernel and compares it with the model.
	for _, commit := range []bool{false, true} {
		name := "drift"
		if commit {
			name = "drift-after-commit"
		}
		b.Run(name, func(b *testing.B) {
			ns := nfttest.NewNS(b)
			a := nsApplier(b, ns)
			if err := a.Apply(m1); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			if d, err := a.Drift(); d != "" || err != nil { // the first check lists
				b.Fatalf("Drift = %q, %v", d, err)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if commit {
					b.StopTimer()
					nfttest.Run(b, "ip", "netns", "exec", ns, "nft", "add", "table", "inet", fmt.Sprintf("other%d", i))
					b.StartTimer()
				}
				if d, err := a.Drift(); d != "" || err != nil {
					b.Fatalf("Drift = %q, %v", d, err)
				}
			}
		})
	}
	b.Run("one-change", func(b *testing.B) {
		ns := nfttest.NewNS(b)
		a := nsApplier(b, ns)
		start := time.Now()
		if err := a.Apply(m1); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		b.Logf("first full apply: %v", time.Since(start))
		ms := []nft.Model{m2, m1}
		i := 0
		for b.Loop() {
			if err := a.Apply(ms[i%2]); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
		st := a.LastApply()
		b.ReportMetric(float64(st.Messages), "msgs")
		b.Logf("last apply: %+v", st)
	})
	// What a reconcile pass costs for one changed service: compile the
	// whole input, merge, Apply the difference.
	b.Run("one-change-with-compile", func(b *testing.B) {
		ns := nfttest.NewNS(b)
		a := nsApplier(b, ns)
		if err := a.Apply(m1); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		ins := []Input{withOneChange(in, 4242), in}
		i := 0
		for b.Loop() {
			m := nft.Merge(base, Compile(ins[i%2]))
			if err := a.Apply(m); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
	})
	b.Run("one-change-with-compiler", func(b *testing.B) {
		ns := nfttest.NewNS(b)
		a := nsApplier(b, ns)
		c := NewCompiler()
		if err := a.Apply(nft.Merge(base, c.Compile(in))); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		ins := []Input{withOneChange(in, 4242), in}
		i := 0
		for b.Loop() {
			m := nft.Merge(base, c.Compile(ins[i%2]))
			if err := a.Apply(m); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
		st := a.LastApply()
		b.ReportMetric(float64(st.Messages), "msgs")
	})
	// The same with a node port for every service (10,000 more elements
	// in svc-nodeports, 100,000 in svc-np-eps).
	b.Run("one-change-with-compiler-nodeports", func(b *testing.B) {
		in := withNodePortsAll(in, 40000)
		ns := nfttest.NewNS(b)
		a := nsApplier(b, ns)
		c := NewCompiler()
		if err := a.Apply(nft.Merge(base, c.Compile(in))); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		ins := []Input{withOneChange(in, 4242), in}
		i := 0
		for b.Loop() {
			m := nft.Merge(base, c.Compile(ins[i%2]))
			if err := a.Apply(m); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
		st := a.LastApply()
		b.ReportMetric(float64(st.Messages), "msgs")
	})
}

// One service change with node ports, external IPs and both policies is
// a small element diff: the elements of that service's changed endpoint,
// nothing else, and no chain changes.
func TestOneChangeSmallDiff(t *testing.T) {
	in := withNodePortsAll(bigInput(1000, 10), 40000)
	in.Services[42].Service.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.42")}
	in.Services[42].Service.InternalTrafficPolicy = lb.PolicyLocal
	c := NewCompiler()
	before := c.Compile(in)
	after := c.Compile(withOneChange(in, 42))
	if c.built != 1 {
		t.Errorf("compiled %d service ports, want 1", c.built)
	}
	texts := func(m nft.Model) map[string]bool {
		out := map[string]bool{}
		for _, s := range m.Sets {
			for e := range s.All() {
				out[s.Name+": "+e.Text()] = true
			}
		}
		return out
	}
	x, y := texts(before), texts(after)
	var diff []string
	for e := range x {
		if !y[e] {
			diff = append(diff, "- "+e)
		}
	}
	for e := range y {
		if !x[e] {
			diff = append(diff, "+ "+e)
		}
	}
	slices.Sort(diff)
	// Only service 42's elements change: those of its ClusterIP, VIP,
	// external IP and node port (all of them, as its backends are indexed
	// in address order and the new address sorts last), and the hairpin
	// element of the replaced local endpoint.
	mine := []string{"172.16.0.42 . ", "100.64.0.42 . ", "203.0.113.42 . ", "tcp . 40042 . ", "svc-hairpin: 10.0.1.164 ", "svc-hairpin: 10.250.0.1 "}
	for _, d := range diff {
		if !slices.ContainsFunc(mine, func(m string) bool { return strings.Contains(d, m) }) {
			t.Errorf("element of another service changed: %s", d)
		}
	}
	// 10 endpoints under the VIP, the external IP and the node port, 1
	// local one under each of the four, a hairpin element: 35, removed
	// and added.
	if len(diff) != 70 {
		t.Errorf("element diff of one endpoint change: %d elements, want 70:\n%s", len(diff), strings.Join(diff, "\n"))
	}
	if !reflect.DeepEqual(before.Chains, after.Chains) {
		t.Errorf("chains changed")
	}
}

func countElements(m nft.Model) int {
	n := 0
	for _, s := range m.Sets {
		n += s.Len()
	}
	return n
}

// packetPathInput is the service measured by BenchmarkPacketPath (web:
// VIP 198.51.100.10 and node port 30080, TCP and UDP, one endpoint, p1 on
// this node) with fillers more LoadBalancer services of 10 endpoints
// each, every one with a node port (40000 on).
func packetPathInput(fillers int) Input {
	web := withNodePorts(svc("web", lb.TypeLoadBalancer, "10.96.0.20", "198.51.100.10", tcp(80, 8080), udp(53, 8080)), 30080, 30080)
	in := Input{
		Node:              testNode,
		ClusterCIDR:       testClusterCIDR,
		PodSubnet:         testPodSubnet,
		WGIface:           testWG,
		NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
		Services:          []ServiceAddrs{web},
		Endpoints:         map[lb.ServiceKey][]lb.Endpoint{web.Service.Key(): {pep("p1", testNode)}},
	}
	bulk := withNodePortsAll(bigInput(fillers, 10), 40000)
	in.Services = append(in.Services, bulk.Services...)
	for k, v := range bulk.Endpoints {
		in.Endpoints[k] = v
	}
	return in
}

// connRate opens TCP connections from ns to dst one after the other for
// d (connect, read the answer, close with a reset) and returns them per
// second.
func connRate(ns string, dst netip.AddrPort, d time.Duration) (float64, error) {
	n := 0
	start := time.Now()
	err := nfttest.InNS(ns, func() error {
		buf := make([]byte, 64)
		for time.Since(start) < d {
			c, err := net.DialTimeout("tcp4", dst.String(), time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Read(buf)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return float64(n) / time.Since(start).Seconds(), err
}

// udpRate sends datagrams from ns to dst over one flow (established after
// the first), each after the answer to the last, for d, and returns the
// round trips per second.
func udpRate(ns string, dst netip.AddrPort, d time.Duration) (float64, error) {
	n := 0
	start := time.Now()
	err := nfttest.InNS(ns, func() error {
		c, err := net.Dial("udp4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 64)
		for time.Since(start) < d {
			c.SetDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte("x")); err != nil {
				return err
			}
			if _, err := c.Read(buf); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return float64(n) / time.Since(start).Seconds(), err
}

// BenchmarkPacketPath measures the per-packet cost of the service paths
// with 10 services installed and with 10,001 (every one with a node port:
// svc-ips ~20,000 elements, svc-eps ~200,000, svc-nodeports ~10,000,
// svc-np-eps ~100,000), side by side in two identical sets of namespaces
// (newTestNet), a round of each path alternating between them. Paths: new
// TCP connections to the node port (nat: svc-ips misses, then the node
// port lookup) and to the VIP, and UDP round trips of one established flow
// to the node port. Each iteration is one round of 1 s per path and
// size; the metrics are means over the rounds, and large/small ratios
// (1.0: no cost of size). Needs root:
//
//	go test -run '^$' -bench PacketPath -benchtime 5x ./lb/proxy
func BenchmarkPacketPath(b *testing.B) {
	nfttest.NeedRoot(b)
	const d = time.Second
	base := firewall.Ruleset(firewall.Config{ClusterCIDR: testClusterCIDR, PodSubnet: testPodSubnet, Bridge: "nlbr0", WGIface: testWG})
	nets := [2]*testNet{newTestNet(b), newTestNet(b)}
	for i, fillers := range [2]int{9, 10000} {
		m := nft.Merge(base, Compile(packetPathInput(fillers)))
		a := nsApplier(b, nets[i].node)
		if err := a.Apply(m); err != nil {
			b.Fatalf("Apply: %v", err)
		}
		b.Logf("%d services: %d set elements", fillers+1, countElements(m))
	}
	paths := []struct {
		name string
		rate func(ns string, dst netip.AddrPort, d time.Duration) (float64, error)
		dst  netip.AddrPort
	}{
		{"nodeport-conn", connRate, ap(nodeIP, 30080)},
		{"vip-conn", connRate, ap(addr("198.51.100.10"), 80)},
		{"nodeport-udp", udpRate, ap(nodeIP, 30080)},
	}
	sums := make([][2]float64, len(paths))
	rounds := 0
	for b.Loop() {
		for p, path := range paths {
			for k := range 2 {
				i := (k + rounds) % 2 // alternate which size goes first
				r, err := path.rate(nets[i].client, path.dst, d)
				if err != nil {
					b.Fatalf("%s, %d: %v", path.name, i, err)
				}
				sums[p][i] += r
			}
		}
		rounds++
	}
	for p, path := range paths {
		small, large := sums[p][0]/float64(rounds), sums[p][1]/float64(rounds)
		b.ReportMetric(small, path.name+"-10/s")
		b.ReportMetric(large, path.name+"-10k/s")
		b.ReportMetric(large/small, path.name+"-ratio")
	}
}
