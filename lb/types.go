// Package lb holds the pure decisions of netloom's LoadBalancer: address
// pools, VIP and ClusterIP allocation, announcer (owner) election and
// service endpoints. Every node computes the same answers from the same
// snapshot of the store; nothing here touches the kernel. The ARP announcer
// is lb/arp, the nftables service proxy lb/proxy.
package lb

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Service types.
const (
	TypeLoadBalancer = "LoadBalancer"
	TypeClusterIP    = "ClusterIP"
	TypeNodePort     = "NodePort"
	// TypeExternalName services are only names (a DNS CNAME): they get no
	// address and are not proxied.
	TypeExternalName = "ExternalName"
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
	Type            string            // TypeLoadBalancer | TypeNodePort | TypeClusterIP | TypeExternalName
	Selector        map[string]string // empty = no endpoints managed
	Ports           []ServicePort
	ClusterIP       netip.Addr // requested (spec.clusterIP) or zero
	// Headless services (clusterIP: None) get no address and are not
	// proxied; their endpoints are still computed.
	Headless bool
	// NodePorts: the service's ports are also served on the node's
	// addresses at their NodePort (type NodePort, and LoadBalancer with
	// allocateLoadBalancerNodePorts, which defaults to true).
	NodePorts bool
	// HealthCheckNodePort is the requested spec.healthCheckNodePort (0:
	// allocate one) of a LoadBalancer service with externalTrafficPolicy
	// Local, whose node answers health checks there.
	HealthCheckNodePort uint16
	// ExternalIPs are spec.externalIPs: addresses the operator routes to
	// the nodes; every node serves the service's ports on them, with the
	// external traffic policy.
	ExternalIPs []netip.Addr
	// InternalTrafficPolicy is PolicyCluster or PolicyLocal ("" =
	// Cluster): with Local, the ClusterIP leads only to endpoints on the
	// client's node.
	InternalTrafficPolicy string
	// PublishNotReady (spec.publishNotReadyAddresses) makes every endpoint
	// with an address count as ready.
	PublishNotReady bool
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
	// ProxyElsewhere: another service proxy (kube-proxy) serves this
	// service; netloom only allocates and announces its VIP.
	ProxyElsewhere bool
}

// Key returns the service's key.
func (s Service) Key() ServiceKey { return ServiceKey{s.Namespace, s.Name} }

// ServicePort is one port of a service.
type ServicePort struct {
	Name       string
	Protocol   string // "TCP" | "UDP"
	Port       uint16
	TargetPort intstr.IntOrString // number, or a named container port; zero = Port
	NodePort   uint16             // requested spec.ports[].nodePort, or 0
}

// Proxied reports whether the service gets addresses and proxy rules:
// ExternalName and headless services do not. (A ProxyElsewhere service
// gets its addresses, and its rules from another proxy.)
func (s Service) Proxied() bool {
	return s.Type != TypeExternalName && !s.Headless
}

// NotProxiedReason says why a service is not proxied, "" when it is.
func (s Service) NotProxiedReason() string {
	switch {
	case s.Type == TypeExternalName:
		return "ExternalName service: a DNS name only, not proxied"
	case s.Headless:
		return "headless service (clusterIP: None): endpoints only, not proxied"
	}
	return ""
}

// NeedsHealthCheck reports whether the service has a health-check node
// port: a LoadBalancer service with externalTrafficPolicy Local.
func (s Service) NeedsHealthCheck() bool {
	return s.Type == TypeLoadBalancer && s.ExternalTrafficPolicy == PolicyLocal
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
	// Ready, Serving and Terminating are the EndpointSlice conditions:
	// Ready endpoints take new connections; a Terminating one that is
	// still Serving takes them only when no endpoint of the service is
	// Ready (KEP-1669); connections already open continue either way.
	Ready       bool
	Serving     bool
	Terminating bool
	// Ports maps container port names to numbers, to resolve a named
	// targetPort.
	Ports map[string]uint16
	// ServicePorts, when not nil, is the target port of each service port
	// by the service port's name, resolved already (as an EndpointSlice
	// gives them): it replaces targetPort and Ports.
	ServicePorts map[string]uint16
}

// Assignment is the addresses a service holds, as recorded in the store
// (Kind AssignmentKind).
type Assignment struct {
	VIP       netip.Addr `json:"vip,omitzero"`
	Pool      string     `json:"pool,omitempty"`
	ClusterIP netip.Addr `json:"clusterIP,omitzero"`
	// NodePorts holds the node port of each service port (same index as
	// Service.Ports), when the service has node ports.
	NodePorts []uint16 `json:"nodePorts,omitempty"`
	// HealthCheckNodePort is the health-check port of a LoadBalancer
	// service with externalTrafficPolicy Local.
	HealthCheckNodePort uint16 `json:"healthCheckNodePort,omitempty"`
}

// Equal reports whether a and b record the same addresses and ports.
func (a Assignment) Equal(b Assignment) bool {
	return a.VIP == b.VIP && a.Pool == b.Pool && a.ClusterIP == b.ClusterIP &&
		slices.Equal(a.NodePorts, b.NodePorts) && a.HealthCheckNodePort == b.HealthCheckNodePort
}

// Result is the allocation of one service.
type Result struct {
	VIP       netip.Addr // zero for ClusterIP services or while pending
	Pool      string     // pool of VIP
	ClusterIP netip.Addr // zero only while pending (service CIDR full), and for services not proxied
	// NodePorts holds the node port of each service port (same index as
	// Service.Ports); nil when the service has none, 0 for a port still
	// pending (the node port range is full).
	NodePorts []uint16
	// HealthCheckNodePort is the port of the service's health checks
	// (Service.NeedsHealthCheck), 0 if none.
	HealthCheckNodePort uint16
	// Pending is why the service has no VIP (or no ClusterIP), "" if none.
	Pending string
	// Conflict notes an address the service asked for or held but lost to
	// an older service, "" if none.
	Conflict string
}
