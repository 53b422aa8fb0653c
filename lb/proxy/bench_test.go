package proxy

import (
	"fmt"
	"net/netip"
	"runtime"
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
}

func countElements(m nft.Model) int {
	n := 0
	for _, s := range m.Sets {
		n += len(s.Elements)
	}
	return n
}
