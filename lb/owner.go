package lb

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"net/netip"
	"slices"
)

// Rank orders candidate nodes for a VIP the way MetalLB's layer 2 mode
// does: by sha256(node + "#" + vip), lowest first (ties, impossible in
// practice, by name). Every node ranks the same candidates the same way,
// and a VIP's ranking is independent of the other VIPs, so losing a node
// moves only the VIPs it owned. The result is a new slice without
// duplicates.
func Rank(vip netip.Addr, candidates []string) []string {
	type ranked struct {
		node string
		h    [sha256.Size]byte
	}
	ip := vip.Unmap().String()
	rs := make([]ranked, 0, len(candidates))
	for _, n := range candidates {
		rs = append(rs, ranked{n, sha256.Sum256([]byte(n + "#" + ip))})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := bytes.Compare(a.h[:], b.h[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.node, b.node)
	})
	rs = slices.CompactFunc(rs, func(a, b ranked) bool { return a.node == b.node })
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.node
	}
	return out
}

// Owner returns the node that announces vip among candidates: the first
// by Rank, "" when there is none.
func Owner(vip netip.Addr, candidates []string) string {
	var best string
	var bh [sha256.Size]byte
	ip := vip.Unmap().String()
	for _, n := range candidates {
		h := sha256.Sum256([]byte(n + "#" + ip))
		if best == "" || bytes.Compare(h[:], bh[:]) < 0 || (h == bh && n < best) {
			best, bh = n, h
		}
	}
	return best
}

// Owners returns the announcing node of every allocated VIP: with
// externalTrafficPolicy Cluster any alive node is a candidate; with Local
// only alive nodes that have a ready endpoint of the service. A VIP with no
// candidate (no alive node, or Local without a ready endpoint on an alive
// node) has no owner and is absent from the map.
//
// results is Plan.Results; endpoints are each service's endpoints (see
// Endpoints); alive holds the names of alive members (a node that is
// leaving gracefully should already be left out, so its VIPs move before it
// goes).
func Owners(services []Service, results map[ServiceKey]Result, alive map[string]bool, endpoints map[ServiceKey][]Endpoint) map[netip.Addr]string {
	nodes := make([]string, 0, len(alive))
	for n, ok := range alive {
		if ok {
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	owners := make(map[netip.Addr]string)
	for _, s := range services {
		if s.Type != TypeLoadBalancer {
			continue
		}
		r, ok := results[s.Key()]
		if !ok || !r.VIP.IsValid() {
			continue
		}
		cands := nodes
		if s.ExternalTrafficPolicy == PolicyLocal {
			cands = localCandidates(endpoints[s.Key()], alive)
		}
		if o := Owner(r.VIP, cands); o != "" {
			owners[r.VIP] = o
		}
	}
	return owners
}

// localCandidates are the alive nodes with an endpoint that takes new
// connections: a Ready one or, when the service has none anywhere, a
// serving terminating one (KEP-1669).
func localCandidates(eps []Endpoint, alive map[string]bool) []string {
	var ready, fallback []string
	for _, ep := range eps {
		switch {
		case !ep.IP.IsValid() || !alive[ep.Node]:
		case ep.Ready && !slices.Contains(ready, ep.Node):
			ready = append(ready, ep.Node)
		case ep.TakesNew() && !slices.Contains(fallback, ep.Node):
			fallback = append(fallback, ep.Node)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return fallback
}
