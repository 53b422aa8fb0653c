package objects

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// yamlPolicy is the API reference's example NetworkPolicy.
const yamlPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
  uid: 0b6c6a33-2a3e-4a4a-9a36-6b5f0b0c0f0f
  resourceVersion: "42"
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
status: {}
`

const jsonPolicy = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"test-network-policy","namespace":"default"},` +
	`"spec":{"podSelector":{"matchLabels":{"role":"db"}},` +
	`"ingress":[{"ports":[{"protocol":"TCP","port":6379}],"from":[{"ipBlock":{"cidr":"172.17.0.0/16","except":["172.17.1.0/24"]}},` +
	`{"namespaceSelector":{"matchLabels":{"project":"myproject"}}},{"podSelector":{"matchLabels":{"role":"frontend"}}}]}],` +
	`"egress":[{"ports":[{"protocol":"TCP","port":5978}],"to":[{"ipBlock":{"cidr":"10.0.0.0/24"}}]}],` +
	`"policyTypes":["Ingress","Egress"]}}`

// netpol builds a NetworkPolicy document in namespace x with the given spec
// (indented two spaces).
func netpol(name, spec string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: x\nspec:\n" + spec
}

func TestParseNetworkPolicy(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{
			name: "API reference example, status and server fields dropped",
			in:   yamlPolicy,
			want: []got{{"NetworkPolicy", "default", "test-network-policy", jsonPolicy}},
		},
		{
			name: "namespace defaults to default",
			in:   strings.Replace(yamlPolicy, "  namespace: default\n", "", 1),
			want: []got{{"NetworkPolicy", "default", "test-network-policy", jsonPolicy}},
		},
		{
			name: "policyTypes omitted, no egress rules: Ingress",
			in:   netpol("deny", "  podSelector: {}\n"),
			want: []got{{"NetworkPolicy", "x", "deny",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"x"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`}},
		},
		{
			name: "policyTypes omitted, empty egress list: Ingress",
			in:   netpol("deny", "  podSelector: {}\n  egress: []\n  ingress: []\n"),
			want: []got{{"NetworkPolicy", "x", "deny",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"x"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`}},
		},
		{
			name: "policyTypes omitted, egress rules: Ingress and Egress; protocol defaults to TCP",
			in:   netpol("dns", "  podSelector: {}\n  egress:\n  - ports:\n    - port: 53\n      protocol: UDP\n    - port: 53\n"),
			want: []got{{"NetworkPolicy", "x", "dns",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"dns","namespace":"x"},"spec":{"podSelector":{},` +
					`"egress":[{"ports":[{"protocol":"UDP","port":53},{"protocol":"TCP","port":53}]}],"policyTypes":["Ingress","Egress"]}}`}},
		},
		{
			name: "explicit Egress only is kept, allow-all rule {} kept, named port, endPort, both selectors in one peer",
			in: netpol("mixed", "  podSelector:\n    matchExpressions:\n    - {key: app, operator: In, values: [web, api]}\n    - {key: legacy, operator: DoesNotExist}\n"+
				"  policyTypes: [Egress]\n  egress:\n  - {}\n  - to:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {app: db}}\n"+
				"    ports:\n    - port: db\n    - {port: 32000, endPort: 32768, protocol: SCTP}\n"),
			want: []got{{"NetworkPolicy", "x", "mixed",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"mixed","namespace":"x"},"spec":{"podSelector":{"matchExpressions":[` +
					`{"key":"app","operator":"In","values":["web","api"]},{"key":"legacy","operator":"DoesNotExist"}]},` +
					`"egress":[{},{"ports":[{"protocol":"TCP","port":"db"},{"protocol":"SCTP","port":32000,"endPort":32768}],` +
					`"to":[{"podSelector":{"matchLabels":{"app":"db"}},"namespaceSelector":{}}]}],"policyTypes":["Egress"]}}`}},
		},
		{
			name: "CIDRs with host bits, IPv6, except equal to a smaller block",
			in: netpol("cidr", "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.1.2.3/8, except: [10.1.0.0/16]}\n"+
				"    - ipBlock: {cidr: 'fd00::/48', except: ['fd00::1/128']}\n    - ipBlock: {cidr: 0.0.0.0/0}\n"),
			want: []got{{"NetworkPolicy", "x", "cidr",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"cidr","namespace":"x"},"spec":{"podSelector":{},` +
					`"ingress":[{"from":[{"ipBlock":{"cidr":"10.1.2.3/8","except":["10.1.0.0/16"]}},{"ipBlock":{"cidr":"fd00::/48","except":["fd00::1/128"]}},` +
					`{"ipBlock":{"cidr":"0.0.0.0/0"}}]}],"policyTypes":["Ingress"]}}`}},
		},
		{
			name: "NetworkPolicyList whose items have no kind or apiVersion",
			in:   `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicyList","items":[{"metadata":{"name":"deny","namespace":"x"},"spec":{"podSelector":{}}}]}`,
			want: []got{{"NetworkPolicy", "x", "deny",
				`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"x"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`}},
		},
		{
			name: "a policy and a pod of the same name are different objects",
			in:   netpol("web", "  podSelector: {}\n") + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: x\n",
			want: []got{
				{"NetworkPolicy", "x", "web", `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"web","namespace":"x"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`},
				{"Pod", "x", "web", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"x"},"spec":{"containers":null}}`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, summarize(objs)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			// The normalized form is a fixed point.
			for _, o := range objs {
				again, err := FromJSON([]json.RawMessage{o.JSON})
				if err != nil {
					t.Fatalf("FromJSON(normalized): %v", err)
				}
				if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
					t.Errorf("normalized form not stable (-first +second):\n%s", diff)
				}
			}
		})
	}
}

func TestParseNetworkPolicyErrors(t *testing.T) {
	sel := func(s string) string { return netpol("p", "  podSelector:\n"+s) }
	ing := func(s string) string { return netpol("p", "  podSelector: {}\n  ingress:\n"+s) }
	eg := func(s string) string { return netpol("p", "  podSelector: {}\n  egress:\n"+s) }
	port := func(s string) string { return ing("  - ports:\n    - " + s + "\n") }
	from := func(s string) string { return ing("  - from:\n    - " + s + "\n") }
	const doc = "document 1 (NetworkPolicy x/p): "
	tests := []struct {
		name string
		in   string
		want string
	}{
		// apiVersion, metadata
		{"old apiVersion", strings.Replace(netpol("p", "  podSelector: {}\n"), "networking.k8s.io/v1", "extensions/v1beta1", 1),
			doc + `apiVersion: "extensions/v1beta1" is not supported for kind NetworkPolicy (use networking.k8s.io/v1)`},
		{"core apiVersion", strings.Replace(netpol("p", "  podSelector: {}\n"), "networking.k8s.io/v1", "v1", 1),
			doc + `apiVersion: "v1" is not supported for kind NetworkPolicy (use networking.k8s.io/v1)`},
		{"bad name", strings.Replace(netpol("p", "  podSelector: {}\n"), "name: p", "name: Allow_DNS", 1),
			`document 1 (NetworkPolicy x/Allow_DNS): metadata.name: invalid name "Allow_DNS": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"spec of the wrong type", netpol("p", "  podSelector: []\n"),
			doc + `spec.podSelector: expected object, got list`},
		{"port of the wrong type", port("port: [80]"),
			doc + `spec.ingress[0].ports[0].port: expected integer, got list`},

		// selectors
		{"bad operator", sel("    matchExpressions:\n    - {key: app, operator: Equals, values: [web]}\n"),
			doc + `spec.podSelector.matchExpressions[0].operator: invalid operator "Equals": must be In, NotIn, Exists or DoesNotExist`},
		{"operator in the wrong case", sel("    matchExpressions:\n    - {key: app, operator: in, values: [web]}\n"),
			doc + `spec.podSelector.matchExpressions[0].operator: invalid operator "in": must be In, NotIn, Exists or DoesNotExist`},
		{"missing operator", sel("    matchExpressions:\n    - {key: app, values: [web]}\n"),
			doc + `spec.podSelector.matchExpressions[0].operator: required (In, NotIn, Exists or DoesNotExist)`},
		{"In without values", sel("    matchExpressions:\n    - {key: app, operator: In}\n"),
			doc + `spec.podSelector.matchExpressions[0].values: required when operator is In (list at least one value)`},
		{"NotIn with empty values", sel("    matchExpressions:\n    - {key: app, operator: NotIn, values: []}\n"),
			doc + `spec.podSelector.matchExpressions[0].values: required when operator is NotIn (list at least one value)`},
		{"Exists with values", sel("    matchExpressions:\n    - {key: app, operator: Exists, values: [web]}\n"),
			doc + `spec.podSelector.matchExpressions[0].values: must be empty when operator is Exists`},
		{"DoesNotExist with values", sel("    matchExpressions:\n    - {key: app, operator: DoesNotExist, values: [web]}\n"),
			doc + `spec.podSelector.matchExpressions[0].values: must be empty when operator is DoesNotExist`},
		{"missing key", sel("    matchExpressions:\n    - {operator: Exists}\n"),
			doc + `spec.podSelector.matchExpressions[0].key: required`},
		{"bad key", sel("    matchExpressions:\n    - {key: 'a b', operator: Exists}\n"),
			doc + `spec.podSelector.matchExpressions[0].key: invalid label key "a b": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
		{"bad value", sel("    matchExpressions:\n    - {key: app, operator: In, values: [ok, 'not ok']}\n"),
			doc + `spec.podSelector.matchExpressions[0].values[1]: invalid label value "not ok": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`},
		{"bad matchLabels key", sel("    matchLabels: {'-app': web}\n"),
			doc + `spec.podSelector.matchLabels: invalid label key "-app": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
		{"bad matchLabels value", sel("    matchLabels: {app: 'a b'}\n"),
			doc + `spec.podSelector.matchLabels[app]: invalid label value "a b": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`},
		{"bad operator in a peer's namespaceSelector", from("namespaceSelector: {matchExpressions: [{key: env, operator: Has}]}"),
			doc + `spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: invalid operator "Has": must be In, NotIn, Exists or DoesNotExist`},
		{"bad operator in a peer's podSelector, egress", eg("  - to:\n    - podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}\n"),
			doc + `spec.egress[0].to[0].podSelector.matchExpressions[0].values: must be empty when operator is Exists`},

		{"YAML reads an unquoted y as a boolean", from("namespaceSelector: {matchLabels: {ns: y}}"),
			doc + `spec.ingress[0].from[0].namespaceSelector.matchLabels[ns]: expected string, got boolean (quote the value)`},

		// policyTypes
		{"policy type in the wrong case", netpol("p", "  podSelector: {}\n  policyTypes: [ingress]\n"),
			doc + `spec.policyTypes[0]: unsupported policy type "ingress": must be Ingress or Egress`},
		{"unknown policy type", netpol("p", "  podSelector: {}\n  policyTypes: [Ingress, Both]\n"),
			doc + `spec.policyTypes[1]: unsupported policy type "Both": must be Ingress or Egress`},
		{"too many policy types", netpol("p", "  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]\n"),
			doc + `spec.policyTypes: 3 entries, at most 2 allowed (Ingress, Egress)`},

		// peers
		{"ipBlock with a podSelector", from("{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}"),
			doc + `spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer (use separate peers)`},
		{"ipBlock with a namespaceSelector, egress", eg("  - to:\n    - {ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}\n"),
			doc + `spec.egress[0].to[0]: ipBlock cannot be combined with podSelector or namespaceSelector in one peer (use separate peers)`},
		{"empty peer", ing("  - from:\n    - podSelector: {}\n    - {}\n"),
			doc + `spec.ingress[0].from[1]: empty peer: set podSelector, namespaceSelector or ipBlock (to allow every source, leave out from)`},
		{"empty egress peer", eg("  - to:\n    - {}\n"),
			doc + `spec.egress[0].to[0]: empty peer: set podSelector, namespaceSelector or ipBlock (to allow every destination, leave out to)`},

		// ipBlock
		{"missing cidr", from("ipBlock: {except: [10.0.0.0/16]}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: required (e.g. 10.0.0.0/8)`},
		{"cidr without length", from("ipBlock: {cidr: 10.0.0.1}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.1": no prefix length (for this one address write 10.0.0.1/32)`},
		{"IPv6 cidr without length", from("ipBlock: {cidr: 'fd00::1'}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "fd00::1": no prefix length (for this one address write fd00::1/128)`},
		{"cidr length too large", from("ipBlock: {cidr: 10.0.0.0/33}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33": prefix length out of range (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"cidr not an address", from("ipBlock: {cidr: 10.0.0/8}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0/8": IPv4 address too short (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"cidr with leading zeros", from("ipBlock: {cidr: 010.0.0.0/8}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "010.0.0.0/8": IPv4 field has octet with leading zero (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"IPv4-mapped cidr", from("ipBlock: {cidr: '::ffff:10.0.0.0/104'}"),
			doc + `spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "::ffff:10.0.0.0/104": an IPv4-mapped IPv6 prefix (write it as an IPv4 CIDR)`},
		{"bad except", from("ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, nonsense]}"),
			doc + `spec.ingress[0].from[0].ipBlock.except[1]: invalid CIDR "nonsense": not an address with a prefix length (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"except outside cidr", from("ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}"),
			doc + `spec.ingress[0].from[0].ipBlock.except[0]: 192.168.0.0/16 is not strictly inside cidr 10.0.0.0/8: an except entry must be a smaller block within cidr`},
		{"except equal to cidr", from("ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}"),
			doc + `spec.ingress[0].from[0].ipBlock.except[0]: 10.0.0.0/8 is not strictly inside cidr 10.0.0.0/8: an except entry must be a smaller block within cidr`},
		{"except larger than cidr", from("ipBlock: {cidr: 10.1.0.0/16, except: [10.0.0.0/8]}"),
			doc + `spec.ingress[0].from[0].ipBlock.except[0]: 10.0.0.0/8 is not strictly inside cidr 10.1.0.0/16: an except entry must be a smaller block within cidr`},
		{"except of the other family", eg("  - to:\n    - ipBlock: {cidr: 0.0.0.0/0, except: ['::/1']}\n"),
			doc + `spec.egress[0].to[0].ipBlock.except[0]: ::/1 and cidr 0.0.0.0/0 are of different IP families: an except entry must lie strictly inside cidr`},

		// ports
		{"unknown protocol", port("{protocol: ICMP, port: 80}"),
			doc + `spec.ingress[0].ports[0].protocol: unsupported protocol "ICMP": must be TCP, UDP or SCTP`},
		{"protocol in lower case", port("{protocol: tcp}"),
			doc + `spec.ingress[0].ports[0].protocol: unsupported protocol "tcp": must be TCP, UDP or SCTP`},
		{"port 0", port("{port: 0}"),
			doc + `spec.ingress[0].ports[0].port: invalid port 0: must be between 1 and 65535, inclusive`},
		{"port too large", eg("  - ports:\n    - {port: 53}\n    - {port: 65536, protocol: UDP}\n"),
			doc + `spec.egress[0].ports[1].port: invalid port 65536: must be between 1 and 65535, inclusive`},
		{"negative port", port("{port: -1}"),
			doc + `spec.ingress[0].ports[0].port: invalid port -1: must be between 1 and 65535, inclusive`},
		{"bad port name", port("{port: HTTP}"),
			doc + `spec.ingress[0].ports[0].port: invalid port name "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); must contain at least one letter (a-z)`},
		{"port name too long", port("{port: a-very-long-port-name}"),
			doc + `spec.ingress[0].ports[0].port: invalid port name "a-very-long-port-name": must be no more than 15 characters`},
		{"port name of digits only", port("{port: '8080'}"),
			doc + `spec.ingress[0].ports[0].port: invalid port name "8080": must contain at least one letter (a-z)`},
		{"endPort without port", port("{endPort: 90}"),
			doc + `spec.ingress[0].ports[0].endPort: endPort 90 without port: set port to the first port of the range`},
		{"endPort with a named port", port("{port: http, endPort: 90}"),
			doc + `spec.ingress[0].ports[0].endPort: endPort 90 with named port "http": a range needs a numeric port`},
		{"endPort below port", port("{port: 8080, endPort: 80}"),
			doc + `spec.ingress[0].ports[0].endPort: endPort 80 is below port 8080: must be greater than or equal to port`},
		{"endPort too large", eg("  - ports:\n    - {port: 80, endPort: 70000}\n"),
			doc + `spec.egress[0].ports[0].endPort: invalid port 70000: must be between 1 and 65535, inclusive`},

		// all or nothing
		{"an invalid policy rejects the whole file", yamlNS + "---\n" + netpol("p", "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: ICMP}\n"),
			`document 2 (NetworkPolicy x/p): spec.ingress[0].ports[0].protocol: unsupported protocol "ICMP": must be TCP, UDP or SCTP`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %d objects, want error %q", len(objs), tt.want)
			}
			if objs != nil {
				t.Errorf("Parse returned objects with an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestDecodeNetworkPolicy(t *testing.T) {
	np, err := DecodeNetworkPolicy(json.RawMessage(jsonPolicy))
	if err != nil {
		t.Fatalf("DecodeNetworkPolicy: %v", err)
	}
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(6379)
	wantIngress := []networkingv1.NetworkPolicyIngressRule{{
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
		From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "172.17.0.0/16", Except: []string{"172.17.1.0/24"}}},
			{NamespaceSelector: np.Spec.Ingress[0].From[1].NamespaceSelector},
			{PodSelector: np.Spec.Ingress[0].From[2].PodSelector},
		},
	}}
	if diff := cmp.Diff(wantIngress, np.Spec.Ingress); diff != "" {
		t.Errorf("ingress (-want +got):\n%s", diff)
	}
	if np.Namespace != "default" || np.Name != "test-network-policy" || np.Spec.PodSelector.MatchLabels["role"] != "db" ||
		np.Spec.Ingress[0].From[1].NamespaceSelector.MatchLabels["project"] != "myproject" {
		t.Errorf("DecodeNetworkPolicy = %+v", np)
	}
	if _, err := DecodeNetworkPolicy(json.RawMessage(podWeb)); err == nil || err.Error() != `decode NetworkPolicy: object is of kind "Pod"` {
		t.Errorf("DecodeNetworkPolicy(pod) error = %v", err)
	}
}

func TestParseCIDR(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "192.168.1.7/32", want: "192.168.1.7/32"},
		{in: "fd00::17/64", want: "fd00::/64"},
		{in: "10.0.0.0", err: `invalid CIDR "10.0.0.0": no prefix length (for this one address write 10.0.0.0/32)`},
		{in: "fe80::1%eth0/64", err: `invalid CIDR "fe80::1%eth0/64": IPv6 zones cannot be present in a prefix (e.g. 10.0.0.0/8 or fd00::/64)`},
	}
	for _, tt := range tests {
		p, err := ParseCIDR(tt.in)
		gotErr, got := "", ""
		if err != nil {
			gotErr = err.Error()
		} else {
			got = p.String()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("ParseCIDR(%q) = %q, %q; want %q, %q", tt.in, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestNetworkPolicyKind(t *testing.T) {
	for _, in := range []string{"networkpolicies", "networkpolicy", "netpol", "NetworkPolicy", "NetworkPolicies", " netpol "} {
		k, err := NormalizeKind(in)
		if err != nil || k != "NetworkPolicy" {
			t.Errorf("NormalizeKind(%q) = %q, %v; want NetworkPolicy", in, k, err)
		}
	}
	if k, ok := Lookup("NetworkPolicy"); !ok || !k.Namespaced || k.APIVersions[0] != "networking.k8s.io/v1" {
		t.Errorf("Lookup(NetworkPolicy) = %+v, %v", k, ok)
	}
}

func TestNetworkPolicyTable(t *testing.T) {
	raws := mustParse(t, yamlPolicy+"---\n"+
		netpol("deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n")+"---\n"+
		netpol("dns", "  podSelector:\n    matchExpressions:\n    - {key: tier, operator: In, values: [front, back]}\n    - {key: legacy, operator: DoesNotExist}\n  policyTypes: [Egress]\n")+"---\n"+
		netpol("allow-web", "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - {}\n"))
	rows, err := Table("NetworkPolicy", raws)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want := [][]string{
		{"NAMESPACE", "NAME", "POD-SELECTOR", "TYPES"},
		{"default", "test-network-policy", "role=db", "Ingress,Egress"},
		{"x", "allow-web", "app=web", "Ingress"},
		{"x", "deny-all", "<none>", "Ingress,Egress"},
		{"x", "dns", "!legacy,tier in (back,front)", "Egress"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(NetworkPolicy) (-want +got):\n%s", diff)
	}

	// With the pods each policy selects, as the agent's PolicyView adds.
	selected := map[string][]string{"x/deny-all": {"a", "b", "c"}, "x/allow-web": {"b"}}
	docs := viewAll(t, raws, func(key string, raw json.RawMessage) (json.RawMessage, error) {
		return PolicyView(raw, selected[key], nil)
	})
	rows, err = Table("NetworkPolicy", docs)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want = [][]string{
		{"NAMESPACE", "NAME", "POD-SELECTOR", "TYPES", "PODS"},
		{"default", "test-network-policy", "role=db", "Ingress,Egress", "<none>"},
		{"x", "allow-web", "app=web", "Ingress", "b"},
		{"x", "deny-all", "<none>", "Ingress,Egress", "a,b,c"},
		{"x", "dns", "!legacy,tier in (back,front)", "Egress", "<none>"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(NetworkPolicy) of views (-want +got):\n%s", diff)
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, rows[:3]); err != nil {
		t.Fatal(err)
	}
	wantText := "" +
		"NAMESPACE   NAME                  POD-SELECTOR   TYPES            PODS\n" +
		"default     test-network-policy   role=db        Ingress,Egress   <none>\n" +
		"x           allow-web             app=web        Ingress          b\n"
	if diff := cmp.Diff(wantText, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
	if _, err := Table("NetworkPolicy", []json.RawMessage{json.RawMessage(podWeb)}); err == nil ||
		err.Error() != `network policy table: decode NetworkPolicy: object is of kind "Pod"` {
		t.Errorf("Table(NetworkPolicy, pod) error = %v", err)
	}
}

func TestPolicyTypesString(t *testing.T) {
	rule := []networkingv1.NetworkPolicyEgressRule{{}}
	tests := []struct {
		spec networkingv1.NetworkPolicySpec
		want string
	}{
		{networkingv1.NetworkPolicySpec{}, "Ingress"},
		{networkingv1.NetworkPolicySpec{Egress: rule}, "Ingress,Egress"},
		{networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Egress"}}, "Egress"},
		{networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Egress", "Ingress"}}, "Ingress,Egress"},
		{networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Bogus"}}, "<none>"},
	}
	for _, tt := range tests {
		if got := PolicyTypesString(&tt.spec); got != tt.want {
			t.Errorf("PolicyTypesString(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}
