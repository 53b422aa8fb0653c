package policy

import (
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// NamespaceNameLabel is the label every namespace carries with its own name
// as the value (Kubernetes sets it on every namespace; netloom adds it to
// every namespace a snapshot knows, including namespaces without a
// Namespace object).
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// Selector converts a label selector the way NetworkPolicy reads it: nil
// selects nothing, an empty selector selects everything, matchLabels and
// matchExpressions (In, NotIn, Exists, DoesNotExist) are ANDed. NotIn and
// DoesNotExist match objects without the key. A selector that does not
// convert (an unknown operator, In without values; validation rejects
// those) selects nothing.
func Selector(sel *metav1.LabelSelector) labels.Selector {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return labels.Nothing()
	}
	return s
}

// NamespaceLabels returns the labels of namespace ns as selectors see them:
// its labels in the snapshot plus kubernetes.io/metadata.name=ns, which
// always wins over a label of the same key.
func NamespaceLabels(s *Snapshot, ns string) labels.Set {
	l := labels.Set{}
	for k, v := range s.Namespaces[ns] {
		l[k] = v
	}
	l[NamespaceNameLabel] = ns
	return l
}

// PolicyTypes reports the directions a policy applies to. With
// spec.policyTypes omitted (empty), a policy is an ingress policy, and an
// egress policy too when it has egress rules; otherwise it applies to the
// types listed.
func PolicyTypes(pol *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(pol.Spec.PolicyTypes) == 0 {
		return true, len(pol.Spec.Egress) > 0
	}
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// Selects returns the pods of the policy's namespace that its podSelector
// selects, in snapshot order. An empty podSelector selects every pod of the
// namespace.
func Selects(s *Snapshot, pol *networkingv1.NetworkPolicy) []Pod {
	sel := Selector(&pol.Spec.PodSelector)
	var out []Pod
	for _, p := range s.Pods {
		if p.Namespace == pol.Namespace && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// PolicyKey is "namespace/name" of a policy, the name decisions use.
func PolicyKey(pol *networkingv1.NetworkPolicy) string { return pol.Namespace + "/" + pol.Name }

// SortedPolicies returns the policies ordered by namespace and name, the
// order in which decisions look for the rule that allows a packet.
func SortedPolicies(pols []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	out := append([]*networkingv1.NetworkPolicy(nil), pols...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// IPBlock is a parsed ipBlock: an address matches when it is inside CIDR
// and inside none of Except.
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// ParseIPBlock parses an ipBlock. Address bits beyond a prefix length are
// ignored (10.1.2.3/8 is 10.0.0.0/8). ok is false when the cidr or an
// except entry does not parse (validation rejects such policies); such a
// block matches nothing.
func ParseIPBlock(b *networkingv1.IPBlock) (blk IPBlock, ok bool) {
	c, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return IPBlock{}, false
	}
	blk.CIDR = c.Masked()
	for _, e := range b.Except {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return IPBlock{}, false
		}
		blk.Except = append(blk.Except, p.Masked())
	}
	return blk, true
}

// Contains reports whether addr is in the block: inside CIDR and outside
// every except entry. Addresses of the other IP family never match.
func (b IPBlock) Contains(addr netip.Addr) bool {
	if !b.CIDR.IsValid() || !b.CIDR.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(addr) {
			return false
		}
	}
	return true
}
