// Package policy implements Kubernetes NetworkPolicy (networking.k8s.io/v1)
// for netloom: a pure evaluator that states the semantics, a compiler from
// the same inputs to an nft.Model fragment (sets, maps and chains of
// netloom's nftables table), and a tracer that walks the compiled model for
// one packet, so that `netloom policy trace` says what the kernel does.
package policy

import (
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"
)

// Protocol is an L4 protocol as NetworkPolicy names it.
type Protocol string

// Protocols NetworkPolicy knows.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// NamedPort is a container port with a name, used to resolve named ports in
// policies against the destination pod.
type NamedPort struct {
	Name     string
	Port     uint16
	Protocol Protocol
}

// Pod is a pod as policy sees it: where it is and what it is.
type Pod struct {
	Namespace string
	Name      string
	IP        netip.Addr
	Node      string
	Labels    map[string]string
	Ports     []NamedPort
	// Unready and Terminating come from the Pod object (its Ready
	// condition, metadata.deletionTimestamp). Policy ignores them; the
	// service proxy sends new connections to ready pods first.
	Unready, Terminating bool
}

// Key is "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Snapshot is everything policy decisions depend on. Namespaces maps a
// namespace name to its labels; a namespace that pods use but that has no
// Namespace object has no labels (except the automatic
// kubernetes.io/metadata.name label, which Evaluate and Compile add).
type Snapshot struct {
	Pods       []Pod
	Namespaces map[string]map[string]string
	Policies   []*networkingv1.NetworkPolicy
}

// Packet is the first packet of a connection, the unit of a verdict.
type Packet struct {
	Src      netip.Addr
	Dst      netip.Addr
	Protocol Protocol
	Port     uint16 // destination port
}

// Direction of a policy rule.
type Direction string

// Directions.
const (
	Ingress Direction = "ingress"
	Egress  Direction = "egress"
)
