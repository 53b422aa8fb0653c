package ipam

import (
	"fmt"
	"testing"
	"time"
)

// benchLeases returns n leases of distinct /24s of 10.0.0.0/8 with every
// tenth one a duplicate claim on its neighbour's subnet, half the nodes
// alive.
func benchLeases(n int) ([]Lease, map[string]bool) {
	leases := make([]Lease, 0, n)
	live := map[string]bool{}
	sp := newSpace(pfx("10.0.0.0/8"), 24)
	for i := range n {
		idx := uint64(i)
		if i%10 == 9 {
			idx--
		}
		node := nodeName(i)
		leases = append(leases, Lease{Node: node, Subnet: sp.subnet(idx), Claimed: ms(time.Duration(i) * time.Millisecond), Renewed: ms(time.Minute)})
		if i%2 == 0 {
			live[node] = true
		}
	}
	return leases, live
}

func BenchmarkResolve(b *testing.B) {
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			leases, live := benchLeases(n)
			now := t0.Add(2 * time.Minute)
			b.ReportAllocs()
			for b.Loop() {
				Resolve(leases, live, now, grace)
			}
		})
	}
}

func BenchmarkPickFree(b *testing.B) {
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			leases, live := benchLeases(n)
			tab := Resolve(leases, live, t0.Add(2*time.Minute), grace)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := PickFree(pfx("10.0.0.0/8"), 24, tab, "newcomer"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
