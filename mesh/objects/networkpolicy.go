package objects

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DecodeNetworkPolicy decodes a normalized NetworkPolicy (Object.JSON of
// kind NetworkPolicy).
func DecodeNetworkPolicy(raw json.RawMessage) (*networkingv1.NetworkPolicy, error) {
	var np networkingv1.NetworkPolicy
	if err := decodeStored(raw, "NetworkPolicy", &np); err != nil {
		return nil, err
	}
	return &np, nil
}

func decodeNetworkPolicyDoc(doc []byte) (*metav1.ObjectMeta, any, error) {
	var np networkingv1.NetworkPolicy
	if err := decodeTyped(doc, &np); err != nil {
		return nil, nil, err
	}
	return &np.ObjectMeta, &np.Spec, nil
}

// checkNetworkPolicySpec validates a NetworkPolicy spec the way the
// Kubernetes API server does and applies its defaults: a port's protocol
// defaults to TCP, and omitted policyTypes become Ingress, plus Egress when
// the policy has egress rules.
func checkNetworkPolicySpec(spec any) error {
	s := spec.(*networkingv1.NetworkPolicySpec)
	if err := checkSelector("spec.podSelector", &s.PodSelector); err != nil {
		return err
	}
	for i, r := range s.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		if err := checkPolicyPorts(path+".ports", r.Ports); err != nil {
			return err
		}
		if err := checkPeers(path+".from", r.From); err != nil {
			return err
		}
	}
	for i, r := range s.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		if err := checkPolicyPorts(path+".ports", r.Ports); err != nil {
			return err
		}
		if err := checkPeers(path+".to", r.To); err != nil {
			return err
		}
	}
	if len(s.PolicyTypes) > 2 {
		return fmt.Errorf("spec.policyTypes: %d entries, at most 2 allowed (Ingress, Egress)", len(s.PolicyTypes))
	}
	for i, t := range s.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			return fmt.Errorf("spec.policyTypes[%d]: unsupported policy type %q: must be Ingress or Egress", i, t)
		}
	}
	// Defaults, as the API server applies them.
	if len(s.PolicyTypes) == 0 {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(s.Egress) > 0 {
			s.PolicyTypes = append(s.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
	tcp := corev1.ProtocolTCP
	for i := range s.Ingress {
		for j := range s.Ingress[i].Ports {
			if s.Ingress[i].Ports[j].Protocol == nil {
				s.Ingress[i].Ports[j].Protocol = &tcp
			}
		}
	}
	for i := range s.Egress {
		for j := range s.Egress[i].Ports {
			if s.Egress[i].Ports[j].Protocol == nil {
				s.Egress[i].Ports[j].Protocol = &tcp
			}
		}
	}
	return nil
}

// checkSelector validates a label selector: keys and values of matchLabels,
// and for matchExpressions the key, the operator (In, NotIn, Exists,
// DoesNotExist) and the values the operator requires or forbids.
func checkSelector(path string, sel *metav1.LabelSelector) error {
	for _, k := range sortedKeys(sel.MatchLabels) {
		if errs := content.IsLabelKey(k); len(errs) > 0 {
			return fmt.Errorf("%s.matchLabels: invalid label key %q: %s", path, k, join(errs))
		}
		if errs := content.IsLabelValue(sel.MatchLabels[k]); len(errs) > 0 {
			return fmt.Errorf("%s.matchLabels[%s]: invalid label value %q: %s", path, k, sel.MatchLabels[k], join(errs))
		}
	}
	for i, e := range sel.MatchExpressions {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		if e.Key == "" {
			return fmt.Errorf("%s.key: required", p)
		}
		if errs := content.IsLabelKey(e.Key); len(errs) > 0 {
			return fmt.Errorf("%s.key: invalid label key %q: %s", p, e.Key, join(errs))
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				return fmt.Errorf("%s.values: required when operator is %s (list at least one value)", p, e.Operator)
			}
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(e.Values) > 0 {
				return fmt.Errorf("%s.values: must be empty when operator is %s", p, e.Operator)
			}
		case "":
			return fmt.Errorf("%s.operator: required (In, NotIn, Exists or DoesNotExist)", p)
		default:
			return fmt.Errorf("%s.operator: invalid operator %q: must be In, NotIn, Exists or DoesNotExist", p, e.Operator)
		}
		for j, v := range e.Values {
			if errs := content.IsLabelValue(v); len(errs) > 0 {
				return fmt.Errorf("%s.values[%d]: invalid label value %q: %s", p, j, v, join(errs))
			}
		}
	}
	// Whatever the checks above missed, the selector must convert the way
	// every consumer converts it.
	if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		return fmt.Errorf("%s: invalid selector: %w", path, err)
	}
	return nil
}

func checkPolicyPorts(path string, ports []networkingv1.NetworkPolicyPort) error {
	for i, p := range ports {
		pp := fmt.Sprintf("%s[%d]", path, i)
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				return fmt.Errorf("%s.protocol: unsupported protocol %q: must be TCP, UDP or SCTP", pp, *p.Protocol)
			}
		}
		switch {
		case p.Port == nil:
			if p.EndPort != nil {
				return fmt.Errorf("%s.endPort: endPort %d without port: set port to the first port of the range", pp, *p.EndPort)
			}
		case p.Port.Type == intstr.String:
			if p.EndPort != nil {
				return fmt.Errorf("%s.endPort: endPort %d with named port %q: a range needs a numeric port", pp, *p.EndPort, p.Port.StrVal)
			}
			if errs := validation.IsValidPortName(p.Port.StrVal); len(errs) > 0 {
				return fmt.Errorf("%s.port: invalid port name %q: %s", pp, p.Port.StrVal, join(errs))
			}
		default:
			if errs := validation.IsValidPortNum(int(p.Port.IntVal)); len(errs) > 0 {
				return fmt.Errorf("%s.port: invalid port %d: %s", pp, p.Port.IntVal, join(errs))
			}
			if p.EndPort != nil {
				if errs := validation.IsValidPortNum(int(*p.EndPort)); len(errs) > 0 {
					return fmt.Errorf("%s.endPort: invalid port %d: %s", pp, *p.EndPort, join(errs))
				}
				if *p.EndPort < p.Port.IntVal {
					return fmt.Errorf("%s.endPort: endPort %d is below port %d: must be greater than or equal to port", pp, *p.EndPort, p.Port.IntVal)
				}
			}
		}
	}
	return nil
}

func checkPeers(path string, peers []networkingv1.NetworkPolicyPeer) error {
	for i, p := range peers {
		pp := fmt.Sprintf("%s[%d]", path, i)
		if p.PodSelector == nil && p.NamespaceSelector == nil && p.IPBlock == nil {
			every := "every source"
			if strings.HasSuffix(path, ".to") {
				every = "every destination"
			}
			return fmt.Errorf("%s: empty peer: set podSelector, namespaceSelector or ipBlock (to allow %s, leave out %s)", pp, every, path[strings.LastIndexByte(path, '.')+1:])
		}
		if p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil) {
			return fmt.Errorf("%s: ipBlock cannot be combined with podSelector or namespaceSelector in one peer (use separate peers)", pp)
		}
		if p.PodSelector != nil {
			if err := checkSelector(pp+".podSelector", p.PodSelector); err != nil {
				return err
			}
		}
		if p.NamespaceSelector != nil {
			if err := checkSelector(pp+".namespaceSelector", p.NamespaceSelector); err != nil {
				return err
			}
		}
		if p.IPBlock != nil {
			if err := checkIPBlock(pp+".ipBlock", p.IPBlock); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkIPBlock(path string, b *networkingv1.IPBlock) error {
	if b.CIDR == "" {
		return fmt.Errorf("%s.cidr: required (e.g. 10.0.0.0/8)", path)
	}
	cidr, err := parseCIDR(b.CIDR)
	if err != nil {
		return fmt.Errorf("%s.cidr: %w", path, err)
	}
	for i, e := range b.Except {
		ep := fmt.Sprintf("%s.except[%d]", path, i)
		ex, err := parseCIDR(e)
		if err != nil {
			return fmt.Errorf("%s: %w", ep, err)
		}
		if ex.Addr().Is4() != cidr.Addr().Is4() {
			return fmt.Errorf("%s: %s and cidr %s are of different IP families: an except entry must lie strictly inside cidr", ep, e, b.CIDR)
		}
		if ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()) {
			return fmt.Errorf("%s: %s is not strictly inside cidr %s: an except entry must be a smaller block within cidr", ep, e, b.CIDR)
		}
	}
	return nil
}

// parseCIDR parses a CIDR the way NetworkPolicy reads it: address bits
// beyond the prefix length are ignored (10.1.2.3/8 is 10.0.0.0/8).
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if !strings.Contains(s, "/") {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: no prefix length (for this one address write %s/%d)", s, s, a.BitLen())
			}
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: not an address with a prefix length (e.g. 10.0.0.0/8 or fd00::/64)", s)
		}
		msg := err.Error()
		if i := strings.LastIndex(msg, "): "); i >= 0 {
			msg = msg[i+3:]
		}
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %s (e.g. 10.0.0.0/8 or fd00::/64)", s, msg)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: an IPv4-mapped IPv6 prefix (write it as an IPv4 CIDR)", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: zones are not allowed", s)
	}
	return p.Masked(), nil
}

// ParseCIDR parses an ipBlock cidr or except entry the way netloom's
// validation does (address bits beyond the prefix length are ignored, so
// the result is masked). Policies in the store have passed it.
func ParseCIDR(s string) (netip.Prefix, error) { return parseCIDR(s) }

// policyDoc is a NetworkPolicy document as Table reads it, with the
// status PolicyView adds (nil when it has none).
type policyDoc struct {
	networkingv1.NetworkPolicy
	Status *policyStatus `json:"status,omitempty"`
}

// selectedPods is the PODS cell: the pods the policy selects, <none> for
// none, or "" when the document does not say.
func (p *policyDoc) selectedPods() string {
	switch {
	case p.Status == nil:
		return ""
	case len(p.Status.SelectedPods) == 0:
		return none
	}
	return strings.Join(p.Status.SelectedPods, ",")
}

// SelectorString renders a label selector as kubectl does
// ("app=web,tier in (a,b)"); the empty selector is <none>.
func SelectorString(sel *metav1.LabelSelector) string {
	return metav1.FormatLabelSelector(sel)
}

// PolicyTypesString renders the policy types of a spec, "Ingress",
// "Egress" or "Ingress,Egress", applying the defaults when they are
// omitted (Ingress, and Egress when there are egress rules).
func PolicyTypesString(s *networkingv1.NetworkPolicySpec) string {
	in, eg := false, false
	for _, t := range s.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			eg = true
		}
	}
	if len(s.PolicyTypes) == 0 {
		in, eg = true, len(s.Egress) > 0
	}
	var out []string
	if in {
		out = append(out, string(networkingv1.PolicyTypeIngress))
	}
	if eg {
		out = append(out, string(networkingv1.PolicyTypeEgress))
	}
	if len(out) == 0 {
		return none
	}
	return strings.Join(out, ",")
}
