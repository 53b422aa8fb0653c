// Package lb holds the pure decisions of netloom's LoadBalancer: address
// pools, VIP and ClusterIP allocation, announcer (owner) election and
// service endpoints. Every node computes the same answers from the same
// snapshot of the store; nothing here touches the kernel. The ARP announcer
// is lb/arp, the nftables service proxy lb/proxy.
package lb

import (
	"cmp"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Service types.
const (
	TypeLoadBalancer = "LoadBalancer"
	TypeClusterIP    = "ClusterIP"
)

// External traffic policies.
const (
	PolicyCluster = "Cluster"
	PolicyLocal   = "Local"
)

// PoolAnnotation on a Service picks an AddressPool by name.
const PoolAnnotation = "netloom.io/address-pool"

// AssignmentKind is the store Kind of the per-service record of the
// addresses a service holds (Namespace and Name are the service's; the value
// is the JSON of Assignment). See Plan.Writes for who writes it.
const AssignmentKind = "ServiceAssignment"

// Version orders creation: HLC wall (unix ms), logical counter, node. It has
// the fields and JSON shape of mesh/store.Version.
type Version struct {
	Wall    int64  `json:"wall"`
	Logical uint32 `json:"logical,omitempty"`
	Node    string `json:"node"`
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	return cmp.Or(cmp.Compare(v.Wall, o.Wall), cmp.Compare(v.Logical, o.Logical), cmp.Compare(v.Node, o.Node))
}

// ServiceKey names a service.
type ServiceKey struct {
	Namespace, Name string
}

// String returns "namespace/name".
func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Compare orders keys by namespace, then name.
func (k ServiceKey) Compare(o ServiceKey) int {
	return cmp.Or(cmp.Compare(k.Namespace, o.Namespace), cmp.Compare(k.Name, o.Name))
}

// Service is what lb needs of a v1 Service.
type Service struct {
	Namespace, Name string
	Type            string            // TypeLoadBalancer | TypeClusterIP
	Selector        map[string]string // empty = no endpoints managed
	Ports           []ServicePort
	ClusterIP       netip.Addr // requested (spec.clusterIP) or zero
	LoadBalancerIP  netip.Addr // requested (spec.loadBalancerIP) or zero
	Pool            string     // from annotation PoolAnnotation, or ""
	// ExternalTrafficPolicy is PolicyCluster or PolicyLocal ("" = Cluster).
	ExternalTrafficPolicy string
	SourceRanges          []netip.Prefix // loadBalancerSourceRanges
	SessionAffinity       bool           // sessionAffinity: ClientIP
	AffinityTimeout       time.Duration  // 0 = default (3h in k8s)
	// Created orders services for conflicts: stamped by the agent at the
	// first apply, kept on updates.
	Created Version
	// Assigned is what the store records for this service (sticky); may be
	// empty.
	Assigned Assignment
}

// Key returns the service's key.
func (s Service) Key() ServiceKey { return ServiceKey{s.Namespace, s.Name} }

// ServicePort is one port of a service.
type ServicePort struct {
	Name       string
	Protocol   string // "TCP" | "UDP"
	Port       uint16
	TargetPort intstr.IntOrString // number, or a named container port; zero = Port
}

// Range is an inclusive range of addresses of one family.
type Range struct {
	Start, End netip.Addr
}

// Pool is an AddressPool.
type Pool struct {
	Name       string
	Ranges     []Range
	AutoAssign bool
}

// Endpoint is a pod that may serve a service.
type Endpoint struct {
	PodNamespace, PodName string
	IP                    netip.Addr
	Node                  string
	Ready                 bool
	// Ports maps container port names to numbers, to resolve a named
	// targetPort.
	Ports map[string]uint16
}

// Assignment is the addresses a service holds, as recorded in the store
// (Kind AssignmentKind).
type Assignment struct {
	VIP       netip.Addr `json:"vip,omitzero"`
	Pool      string     `json:"pool,omitempty"`
	ClusterIP netip.Addr `json:"clusterIP,omitzero"`
}

// Result is the allocation of one service.
type Result struct {
	VIP       netip.Addr // zero for ClusterIP services or while pending
	Pool      string     // pool of VIP
	ClusterIP netip.Addr // zero only while pending (service CIDR full)
	// Pending is why the service has no VIP (or no ClusterIP), "" if none.
	Pending string
	// Conflict notes an address the service asked for or held but lost to
	// an older service, "" if none.
	Conflict string
}
