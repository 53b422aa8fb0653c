package manifests

import (
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// Limits the schema sets and mesh/objects does not: the API server needs
// them to bound the cost of the CEL rules on each entry (a rule on an
// unbounded list of unbounded strings is refused when the CRD is created).
// An entry is at most two IPv6 addresses and a "-": 93 characters with
// spaces around the dash; a pool of more than 1024 entries is a mistake.
const (
	MaxAddresses       = 1024
	MaxAddressEntryLen = 128
)

// The CEL pieces the entry rules are made of; self is one entry of
// spec.addresses. lb.ParseRange trims spaces around the entry and around
// the two ends of a range, so do they.
const (
	celEntry   = "self.trim()"
	celFrom    = "self.split('-')[0].trim()"
	celTo      = "self.split('-')[1].trim()"
	celIsRange = "self.split('-').size() == 2 && isIP(" + celFrom + ") && isIP(" + celTo + ")"
)

// celIPv4Int is a CEL expression: the IPv4 address addr (a CEL string
// isIP accepted, of family 4: four decimal octets, no leading zeros) as an
// int. CEL has no ordering of addresses; for IPv6 there is no cheap way
// (the cost the API server estimates for building prefixes bit by bit is
// unbounded), so IPv6 ranges are checked for order by the agent only.
func celIPv4Int(addr string) string {
	var terms []string
	for i, weight := range []string{" * 16777216", " * 65536", " * 256", ""} {
		terms = append(terms, "int("+addr+".split('.')["+strconv.Itoa(i)+"])"+weight)
	}
	return strings.Join(terms, " + ")
}

// addressEntryRules mirror lb.ParseRange as far as CEL can: the syntax,
// host bits of a CIDR, the families of a range's ends and, for IPv4, that
// a range does not start after it ends. The Kubernetes IP and CIDR
// functions refuse IPv4-mapped IPv6 addresses (::ffff:192.0.2.1), which
// lb.ParseRange takes as IPv4: the CRD is stricter there.
func addressEntryRules() apiextensionsv1.ValidationRules {
	return apiextensionsv1.ValidationRules{
		{
			Rule: "isCIDR(" + celEntry + ") || isIP(" + celEntry + ") || (" + celIsRange + ")",
			Message: "must be a CIDR (192.168.1.240/28), a range (192.168.1.240-192.168.1.250) or one address; " +
				"no zones, no IPv4-mapped IPv6 addresses",
		},
		{
			// A messageExpression naming the masked CIDR would be nicer, but
			// the API server estimates the cost of string(cidr) as unbounded.
			Rule:    "!isCIDR(" + celEntry + ") || cidr(" + celEntry + ") == cidr(" + celEntry + ").masked()",
			Message: "CIDR has host bits set; give the network address (192.168.1.240/28, not 192.168.1.241/28)",
		},
		{
			Rule:    "!(" + celIsRange + ") || ip(" + celFrom + ").family() == ip(" + celTo + ").family()",
			Message: "range mixes IPv4 and IPv6",
		},
		{
			Rule: "!(" + celIsRange + " && ip(" + celFrom + ").family() == 4 && ip(" + celTo + ").family() == 4) || " +
				celIPv4Int(celFrom) + " <= " + celIPv4Int(celTo),
			Message: "range starts after it ends",
		},
	}
}

// AddressPoolCRD is the CustomResourceDefinition of AddressPool
// (netloom.io/v1alpha1, cluster scoped), the schema of
// mesh/objects.AddressPool:
//
//	spec:
//	  addresses: [CIDR | from-to | address, ...]   # required, at least one
//	  autoAssign: true                             # defaults to true
//
// The API server checks the syntax of every entry, host bits of CIDRs,
// that a range's ends are of one family and, for IPv4, in order. netloom's
// own validation also checks the order of IPv6 ranges, that a pool's
// entries do not overlap (lb.ParsePool), and that pools overlap neither
// each other nor the cluster or service CIDR (lb.ValidateApply, at apply
// time in standalone mode); in Kubernetes mode nothing refuses such a pool
// at `kubectl apply`, so the agent must. TestAddressPoolSchema's table
// lists where the two differ.
func AddressPoolCRD() *apiextensionsv1.CustomResourceDefinition {
	str := func(s string) *string { return &s }
	i64 := func(i int64) *int64 { return &i }
	entry := apiextensionsv1.JSONSchemaProps{
		Type:         "string",
		MinLength:    i64(1),
		MaxLength:    i64(MaxAddressEntryLen),
		XValidations: addressEntryRules(),
	}
	spec := apiextensionsv1.JSONSchemaProps{
		Type:        "object",
		Description: "The addresses LoadBalancer services get their VIPs from.",
		Required:    []string{"addresses"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"addresses": {
				Type: "array",
				Description: "CIDRs (192.168.1.240/28: an IPv4 CIDR of /30 or shorter leaves out its network and broadcast addresses), " +
					"ranges (192.168.1.240-192.168.1.250, both ends included) and single addresses; at least one. " +
					"Entries must overlap neither each other nor another pool (netloom checks that, not the API server).",
				MinItems: i64(1),
				MaxItems: i64(MaxAddresses),
				// Two equal entries overlap, which lb.ParsePool refuses too.
				XListType: str("set"),
				Items:     &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &entry},
			},
			"autoAssign": {
				Type:        "boolean",
				Description: "Whether services that name no pool (annotation netloom.io/address-pool) and ask for no address get VIPs from this pool.",
				Default:     &apiextensionsv1.JSON{Raw: []byte("true")},
			},
		},
	}
	root := apiextensionsv1.JSONSchemaProps{
		Type:        "object",
		Description: "AddressPool: addresses netloom gives LoadBalancer services as VIPs.",
		Required:    []string{"spec"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"apiVersion": {Type: "string"},
			"kind":       {Type: "string"},
			"metadata": {
				Type: "object",
				Properties: map[string]apiextensionsv1.JSONSchemaProps{
					// netloom names pools as DNS labels (no dots), as
					// mesh/objects does.
					"name": {
						Type:      "string",
						MaxLength: i64(63),
						Pattern:   `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`,
					},
				},
			},
			"spec": spec,
		},
	}
	crd := &apiextensionsv1.CustomResourceDefinition{
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind:       AddressPoolKind,
				ListKind:   AddressPoolListKind,
				Plural:     AddressPoolResource,
				Singular:   AddressPoolSingular,
				ShortNames: []string{"pool", "pools"},
				Categories: []string{"netloom"},
			},
			Scope: apiextensionsv1.ClusterScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name:    Version,
				Served:  true,
				Storage: true,
				Schema:  &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &root},
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "Addresses", Type: "string", JSONPath: ".spec.addresses"},
					{Name: "Auto-Assign", Type: "boolean", JSONPath: ".spec.autoAssign"},
					{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"},
				},
			}},
		},
	}
	crd.APIVersion, crd.Kind = apiextensionsv1.SchemeGroupVersion.String(), "CustomResourceDefinition"
	crd.Name, crd.Labels = AddressPoolCRDName, labels()
	return crd
}
