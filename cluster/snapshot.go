package cluster

import (
	"net/netip"
	"time"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh"
)

// Snapshot is the cluster as this node sees it at one moment. It is
// immutable: share it freely, never modify it or anything it points to.
// Parts that did not change since the previous snapshot keep their
// pointers (Policy, LB), which the incremental compilers use to skip work.
type Snapshot struct {
	// Seq increases with every snapshot a Hub publishes.
	Seq uint64
	// At is when the snapshot was built: every object stored before At is
	// in it.
	At time.Time
	// Node is this node's own state.
	Node Local
	// Members is the membership, this node included (Self).
	Members []mesh.Member
	// Leases are every node's subnet claims; Subnets is who won which
	// subnet, resolved at At.
	Leases  []ipam.Lease
	Subnets ipam.Table
	// NodeSubnet says how this node gets its pod subnet: assigned by the
	// cluster, not yet, or (zero) by gossip agreement.
	NodeSubnet NodeSubnet
	// Policy holds the pods that have an address (with labels and named
	// ports), the namespaces' labels and the NetworkPolicies. It is nil
	// while the source has no complete view of the objects yet (a
	// Kubernetes source before its caches synced): then LB is nil too, and
	// no room changes what the objects decide in the kernel.
	Policy *policy.Snapshot
	// Services carry the addresses the store records for them (Assigned);
	// Pools are the address pools.
	Services []lb.Service
	Pools    []lb.Pool
	// Endpoints are the services' endpoints as the source gives them
	// (Kubernetes EndpointSlices); nil: each service's selector picks
	// them from the pods of Policy.
	Endpoints map[lb.ServiceKey][]lb.Endpoint
	// LB is every load-balancing decision for this snapshot.
	LB *LB
	// Gen identifies the objects: equal fields mean unchanged kinds.
	Gen Gens
}

// Local is what this node knows of itself, beyond the objects.
type Local struct {
	Name string
	// Joined is set once the node has heard the cluster since it started
	// (or decided to go on alone): before, it claims nothing, programs no
	// overlay and announces no VIP, since its view is partial.
	Joined bool
	// Leaving is set when a graceful leave started.
	Leaving bool
	// Subnet is this node's pod subnet once it is won and settled; SubnetErr
	// says why there is none.
	Subnet    netip.Prefix
	SubnetErr string
	// SubnetWaiting: SubnetErr is the node waiting for the cluster to
	// assign it a subnet, not a fault.
	SubnetWaiting bool
	// Bridge is the subnet whose gateway address the pod bridge holds (set
	// by the host side once it made the bridge): routes to remote pods
	// leave from that address, so they wait for it.
	Bridge netip.Prefix
}

// NodeSubnet is how this node gets its pod subnet, as the source says.
// The zero value: the nodes agree on subnets by gossip (the gossip store,
// or a Kubernetes cluster that does not allocate node CIDRs).
type NodeSubnet struct {
	// Assigned is the subnet the cluster assigned this node (a Kubernetes
	// Node's spec.podCIDR): the node uses it, and it wins over every
	// subnet a node picked.
	Assigned netip.Prefix
	// Wait, when Assigned is invalid, says why the node claims nothing yet:
	// the cluster assigns subnets but has not assigned this node one.
	Wait string
}

// LB is the load-balancing state of a snapshot: addresses, endpoints and
// announcers. Every node computes the same one from the same snapshot.
type LB struct {
	Plan      lb.Plan
	Endpoints map[lb.ServiceKey][]lb.Endpoint
	// Owners maps each VIP to the node that announces it ("" while no node
	// may).
	Owners map[netip.Addr]string
	// Candidates are the nodes that may announce VIPs and serve endpoints:
	// alive and not leaving.
	Candidates map[string]bool
	// Gen identifies the computation: equal Gens are the same state.
	Gen uint64
}

// Gens are the generations of the objects in a snapshot, per part.
type Gens struct {
	Leases, Policy, Services, Pools uint64
	// Pods moves only when pods or their addresses change (Policy also
	// moves with namespaces and policies): endpoints read only pods. With
	// Endpoints from the source it moves when they change too.
	Pods uint64
}

// Alive is the set of members that are alive (or suspected, which
// memberlist does not report).
func (s *Snapshot) Alive() map[string]bool {
	out := make(map[string]bool, len(s.Members))
	for _, m := range s.Members {
		if m.State == mesh.StateAlive || m.State == mesh.StateSuspect {
			out[m.Name] = true
		}
	}
	return out
}
