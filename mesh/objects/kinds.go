package objects

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// KindInfo describes a kind netloom accepts.
type KindInfo struct {
	Kind        string   // canonical name, e.g. "Pod"
	Plural      string   // lower-case plural for the CLI, e.g. "pods"
	ShortNames  []string // further CLI aliases, e.g. "po"
	APIVersions []string // accepted apiVersions; the first is the one to suggest
	Namespaced  bool     // false: cluster scoped, Object.Namespace is ""
}

// kindDef is one entry of the kind table.
type kindDef struct {
	KindInfo

	// validName checks metadata.name (returns problems, like the
	// apimachinery validation functions).
	validName func(string) []string
	// decode decodes one JSON document into the kind's typed struct. It
	// reports only decoding problems (wrong types, duplicate fields) and
	// returns the metadata and the value to store as "spec" (nil for none).
	decode func(doc []byte) (*metav1.ObjectMeta, any, error)
	// check validates and defaults the spec returned by decode, in place.
	check func(spec any) error
	// status, when set, returns what is kept of the object's status (nil
	// for nothing); it is called only on a document decode accepted.
	status func(doc []byte) any
	// table is the kind's table for `netloom get`: the columns after
	// NAMESPACE and NAME, each read from a document of the kind (see
	// Table).
	table tabler
}

// kinds is the table of kinds netloom accepts, in the order they are listed
// to users.
var kinds = []kindDef{
	{
		KindInfo: KindInfo{
			Kind:        "Namespace",
			Plural:      "namespaces",
			ShortNames:  []string{"ns"},
			APIVersions: []string{"v1"},
			Namespaced:  false,
		},
		validName: validation.IsDNS1123Label,
		decode:    decodeNamespaceDoc,
		table:     columns[corev1.Namespace]{labelsColumn[corev1.Namespace]()},
	},
	{
		KindInfo: KindInfo{
			Kind:        "Pod",
			Plural:      "pods",
			ShortNames:  []string{"po"},
			APIVersions: []string{"v1"},
			Namespaced:  true,
		},
		validName: validation.IsDNS1123Subdomain,
		decode:    decodePodDoc,
		status:    podReadiness,
		check:     checkPodSpec,
		table: columns[corev1.Pod]{
			{name: "IP", cell: func(p *corev1.Pod) string { return p.Status.PodIP }},
			{name: "NODE", cell: func(p *corev1.Pod) string { return p.Spec.NodeName }},
			labelsColumn[corev1.Pod](),
		},
	},
	{
		KindInfo: KindInfo{
			Kind:        "NetworkPolicy",
			Plural:      "networkpolicies",
			ShortNames:  []string{"netpol"},
			APIVersions: []string{"networking.k8s.io/v1"},
			Namespaced:  true,
		},
		validName: validation.IsDNS1123Subdomain,
		decode:    decodeNetworkPolicyDoc,
		check:     checkNetworkPolicySpec,
		table: columns[policyDoc]{
			{name: "POD-SELECTOR", cell: func(p *policyDoc) string { return SelectorString(&p.Spec.PodSelector) }},
			{name: "TYPES", cell: func(p *policyDoc) string { return PolicyTypesString(&p.Spec) }},
			{name: "PODS", cell: (*policyDoc).selectedPods, optional: true},
		},
	},
	{
		KindInfo: KindInfo{
			Kind:        "Service",
			Plural:      "services",
			ShortNames:  []string{"svc"},
			APIVersions: []string{"v1"},
			Namespaced:  true,
		},
		validName: validation.IsDNS1035Label,
		decode:    decodeServiceDoc,
		check:     checkServiceSpec,
		table: columns[corev1.Service]{
			{name: "TYPE", cell: serviceType},
			{name: "CLUSTER-IP", cell: serviceClusterIP},
			{name: "EXTERNAL-IP", cell: serviceExternalIP},
			{name: "PORTS", cell: func(s *corev1.Service) string { return PortsString(s.Spec.Ports) }},
			{name: "ANNOUNCED-BY", cell: func(s *corev1.Service) string { return s.Annotations[AnnouncedByAnnotation] }},
			{name: "REASON", cell: serviceReason, optional: true},
		},
	},
	{
		KindInfo: KindInfo{
			Kind:        "AddressPool",
			Plural:      "addresspools",
			ShortNames:  []string{"pool", "pools"},
			APIVersions: []string{AddressPoolAPIVersion},
			Namespaced:  false,
		},
		validName: validation.IsDNS1123Label,
		decode:    decodeAddressPoolDoc,
		check:     checkAddressPoolSpec,
		table: columns[AddressPool]{
			{name: "ADDRESSES", cell: func(p *AddressPool) string { return strings.Join(p.Spec.Addresses, ",") }},
			{name: "AUTO-ASSIGN", cell: func(p *AddressPool) string { return strconv.FormatBool(p.Spec.autoAssign()) }},
		},
	},
}

// Kinds lists the kinds netloom accepts.
func Kinds() []KindInfo {
	out := make([]KindInfo, len(kinds))
	for i, k := range kinds {
		out[i] = k.KindInfo
		out[i].ShortNames = append([]string(nil), k.ShortNames...)
		out[i].APIVersions = append([]string(nil), k.APIVersions...)
	}
	return out
}

// KindNames lists the canonical names of the kinds netloom accepts, in the
// table's order: what the dashboard and the metrics ask an agent for.
func KindNames() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Kind
	}
	return out
}

// Lookup returns the description of a kind by its canonical name ("Pod").
func Lookup(kind string) (KindInfo, bool) {
	d, ok := lookup(kind)
	if !ok {
		return KindInfo{}, false
	}
	return d.KindInfo, true
}

func lookup(kind string) (*kindDef, bool) {
	for i := range kinds {
		if kinds[i].Kind == kind {
			return &kinds[i], true
		}
	}
	return nil, false
}

// NormalizeKind maps what a user types after `netloom get` to a canonical
// kind: the kind name, its plural or a short name, in any case ("pods",
// "Pod", "po" -> "Pod"; "namespaces", "ns" -> "Namespace").
func NormalizeKind(s string) (string, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	for _, k := range kinds {
		if l == strings.ToLower(k.Kind) || l == k.Plural || contains(k.ShortNames, l) {
			return k.Kind, nil
		}
	}
	plurals := make([]string, len(kinds))
	for i, k := range kinds {
		plurals[i] = k.Plural
	}
	return "", fmt.Errorf("unknown kind %q (netloom knows: %s)", s, strings.Join(plurals, ", "))
}

// kindNames lists the canonical kind names, for messages.
func kindNames() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Kind
	}
	return out
}
