package lb

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOwnerIsFirstOfRank(t *testing.T) {
	nodes := []string{"node1", "node2", "node3", "node4", "node5"}
	for i := range 50 {
		vip := netip.AddrFrom4([4]byte{10, 77, 0, byte(i)})
		r := Rank(vip, nodes)
		if got := Owner(vip, nodes); got != r[0] {
			t.Errorf("%s: Owner %s, Rank %v", vip, got, r)
		}
		// Every node computes the same, whatever order it lists members in.
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		if got := Owner(vip, rev); got != r[0] {
			t.Errorf("%s: Owner depends on order", vip)
		}
		// Losing a node that is not the owner keeps the owner; losing the
		// owner hands over to the second in rank.
		without := func(n string) []string {
			return slices.DeleteFunc(slices.Clone(nodes), func(m string) bool { return m == n })
		}
		if got := Owner(vip, without(r[len(r)-1])); got != r[0] {
			t.Errorf("%s: losing a non-owner moved the VIP", vip)
		}
		if got := Owner(vip, without(r[0])); got != r[1] {
			t.Errorf("%s: owner gone: %s, want %s", vip, got, r[1])
		}
	}
	if got := Owner(ip("10.0.0.1"), nil); got != "" {
		t.Errorf("no candidates: %q", got)
	}
}

// The rank is MetalLB's: sha256(node + "#" + ip), lowest first.
func TestRankIsMetalLBs(t *testing.T) {
	vip := ip("192.168.1.240")
	nodes := []string{"a", "b", "c", "d"}
	got := Rank(vip, append(nodes, "a"))
	want := slices.Clone(nodes)
	slices.SortFunc(want, func(x, y string) int {
		hx := sha256.Sum256([]byte(x + "#192.168.1.240"))
		hy := sha256.Sum256([]byte(y + "#192.168.1.240"))
		return slices.Compare(hx[:], hy[:])
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// The VIPs spread over the nodes.
	count := map[string]int{}
	for i := range 200 {
		count[Owner(netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i)}), nodes)]++
	}
	for _, n := range nodes {
		if count[n] < 20 {
			t.Errorf("node %s owns %d of 200 VIPs: %v", n, count[n], count)
		}
	}
}

func TestOwners(t *testing.T) {
	vip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(i)}) }
	all := map[string]bool{"n1": true, "n2": true, "n3": true, "dead": false}
	aliveList := []string{"n1", "n2", "n3"}

	var svcs []Service
	results := map[ServiceKey]Result{}
	eps := map[ServiceKey][]Endpoint{}
	add := func(name string, v int, policy string, e ...Endpoint) {
		s := lbSvc(name, int64(v))
		s.ExternalTrafficPolicy = policy
		svcs = append(svcs, s)
		results[s.Key()] = Result{VIP: vip(v), ClusterIP: ip(fmt.Sprintf("10.96.0.%d", v))}
		eps[s.Key()] = e
	}
	ep := func(node string, ready bool) Endpoint {
		return Endpoint{PodName: "p-" + node, Node: node, Ready: ready, IP: ip("10.244.0.5")}
	}
	add("cluster", 1, PolicyCluster)
	add("default", 2, "")
	add("local", 3, PolicyLocal, ep("n2", true), ep("n3", false), ep("dead", true))
	add("local-two", 4, PolicyLocal, ep("n1", true), ep("n3", true), ep("n3", true))
	add("local-none", 5, PolicyLocal, ep("n3", false), ep("dead", true))
	pending := lbSvc("pending", 6)
	svcs = append(svcs, pending)
	results[pending.Key()] = Result{Pending: "full"}
	plain := lbSvc("plain", 7)
	plain.Type = TypeClusterIP
	svcs = append(svcs, plain)
	results[plain.Key()] = Result{ClusterIP: ip("10.96.0.7")}

	got := Owners(svcs, results, all, eps)
	want := map[netip.Addr]string{
		vip(1): Owner(vip(1), aliveList),
		vip(2): Owner(vip(2), aliveList),
		vip(3): "n2",
		vip(4): Owner(vip(4), []string{"n1", "n3"}),
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if len(Owners(svcs, results, nil, eps)) != 0 {
		t.Errorf("no alive nodes: owners exist")
	}
}
