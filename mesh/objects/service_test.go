package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// yamlServiceExported is a LoadBalancer Service as `kubectl get -o yaml`
// prints it, with the server's fields and status, and every field netloom
// uses.
const yamlServiceExported = `apiVersion: v1
kind: Service
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"name":"web","namespace":"shop"}}
    netloom.io/address-pool: lan
  creationTimestamp: "2024-05-02T09:14:11Z"
  labels:
    app.kubernetes.io/name: web
  name: web
  namespace: shop
  resourceVersion: "81723"
  uid: 5d7c1c9e-0b7c-4c5e-9f43-2b1e0c7d9a11
spec:
  allocateLoadBalancerNodePorts: true
  clusterIP: 10.96.14.7
  clusterIPs:
  - 10.96.14.7
  externalTrafficPolicy: Local
  healthCheckNodePort: 31877
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  loadBalancerIP: 192.168.1.241
  loadBalancerSourceRanges:
  - 192.168.0.0/16
  - 10.1.2.3/8
  ports:
  - name: http
    nodePort: 30080
    port: 80
    protocol: TCP
    targetPort: http
  - appProtocol: dns
    name: dns
    nodePort: 30053
    port: 53
    protocol: UDP
    targetPort: 5353
  selector:
    app.kubernetes.io/name: web
    tier: front
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
  type: LoadBalancer
status:
  loadBalancer:
    ingress:
    - ip: 192.168.1.241
      ipMode: VIP
`

// A realistic Service loads with its spec unchanged, its status and server
// fields dropped, and converts to what lb needs.
func TestRealisticService(t *testing.T) {
	objs, err := Parse([]byte(yamlServiceExported))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("Parse returned %d objects, want 1", len(objs))
	}
	o := objs[0]
	if diff := cmp.Diff(got{"Service", "shop", "web", ""}, got{o.Kind, o.Namespace, o.Name, ""}); diff != "" {
		t.Errorf("object (-want +got):\n%s", diff)
	}

	var orig corev1.Service
	if err := yaml.Unmarshal([]byte(yamlServiceExported), &orig); err != nil {
		t.Fatal(err)
	}
	svc, err := DecodeService(o.JSON)
	if err != nil {
		t.Fatalf("DecodeService: %v", err)
	}
	if diff := cmp.Diff(orig.Spec, svc.Spec); diff != "" {
		t.Errorf("spec after round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(corev1.ServiceStatus{}, svc.Status); diff != "" {
		t.Errorf("status kept (-want +got):\n%s", diff)
	}
	var top struct {
		Metadata map[string]any `json:"metadata"`
		Status   any            `json:"status"`
	}
	if err := json.Unmarshal(o.JSON, &top); err != nil {
		t.Fatal(err)
	}
	wantMeta := map[string]any{
		"name":        "web",
		"namespace":   "shop",
		"labels":      map[string]any{"app.kubernetes.io/name": "web"},
		"annotations": map[string]any{"netloom.io/address-pool": "lan"},
	}
	if diff := cmp.Diff(wantMeta, top.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if top.Status != nil {
		t.Errorf("status = %v, want none", top.Status)
	}

	// The normalized form is a fixed point, through Parse and FromJSON.
	again, err := Parse(o.JSON)
	if err != nil {
		t.Fatalf("Parse(normalized): %v", err)
	}
	if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
		t.Errorf("normalized form not stable (-first +second):\n%s", diff)
	}
	again, err = FromJSON([]json.RawMessage{o.JSON})
	if err != nil {
		t.Fatalf("FromJSON(normalized): %v", err)
	}
	if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
		t.Errorf("normalized form not stable through FromJSON (-first +second):\n%s", diff)
	}

	// `get -o yaml` output parses back to the same object.
	y, err := ToYAML(o.JSON)
	if err != nil {
		t.Fatal(err)
	}
	again, err = Parse(y)
	if err != nil {
		t.Fatalf("Parse(%s): %v", y, err)
	}
	if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
		t.Errorf("round trip through YAML (-first +second):\n%s", diff)
	}

	ls, err := LBService(svc)
	if err != nil {
		t.Fatalf("LBService: %v", err)
	}
	want := lb.Service{
		Namespace: "shop", Name: "web", Type: lb.TypeLoadBalancer,
		Selector: map[string]string{"app.kubernetes.io/name": "web", "tier": "front"},
		Ports: []lb.ServicePort{
			{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromString("http"), NodePort: 30080},
			{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 30053},
		},
		NodePorts:             true,
		HealthCheckNodePort:   31877,
		ClusterIP:             netip.MustParseAddr("10.96.14.7"),
		LoadBalancerIP:        netip.MustParseAddr("192.168.1.241"),
		Pool:                  "lan",
		ExternalTrafficPolicy: lb.PolicyLocal,
		SourceRanges:          []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")},
		SessionAffinity:       true,
		AffinityTimeout:       10 * time.Minute,
	}
	if diff := cmp.Diff(want, ls, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("LBService (-want +got):\n%s", diff)
	}
}

// svcDoc builds a Service document named web in namespace x with the
// given spec (indented two spaces).
func svcDoc(spec string) string {
	return "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: x\nspec:\n" + spec
}

// port80 is the smallest valid port list.
const port80 = "  ports:\n  - port: 80\n"

func TestParseService(t *testing.T) {
	const meta = `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"x"},"spec":`
	tests := []struct {
		name string
		in   string
		want string // normalized JSON of the one object
	}{
		{
			name: "defaults: type ClusterIP, protocol TCP, targetPort = port, sessionAffinity None",
			in:   svcDoc(port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"None"}}`,
		},
		{
			name: "targetPort 0 is the default too",
			in:   svcDoc("  ports:\n  - port: 80\n    targetPort: 0\n"),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"None"}}`,
		},
		{
			name: "LoadBalancer: externalTrafficPolicy defaults to Cluster",
			in:   svcDoc("  type: LoadBalancer\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"LoadBalancer","sessionAffinity":"None","externalTrafficPolicy":"Cluster"}}`,
		},
		{
			name: "ClusterIP: externalTrafficPolicy Cluster is dropped",
			in:   svcDoc("  externalTrafficPolicy: Cluster\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"None"}}`,
		},
		{
			name: "ClientIP: timeout defaults to 10800",
			in:   svcDoc("  sessionAffinity: ClientIP\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":10800}}}}`,
		},
		{
			name: "ClientIP: empty clientIP config gets the default timeout",
			in:   svcDoc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP: {}\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":10800}}}}`,
		},
		{
			name: "ClientIP: timeout limits are inclusive",
			in:   svcDoc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 86400\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":86400}}}}`,
		},
		{
			name: "clusterIPs alone fills clusterIP",
			in:   svcDoc("  clusterIPs: [10.96.0.20]\n" + port80),
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"clusterIP":"10.96.0.20","clusterIPs":["10.96.0.20"],"type":"ClusterIP","sessionAffinity":"None"}}`,
		},
		{
			name: "several named ports, named and numeric targetPorts, UDP, selector, IPv6 addresses",
			in: svcDoc("  type: LoadBalancer\n  clusterIP: 'fd00:96::20'\n  loadBalancerIP: '2001:db8::10'\n  loadBalancerSourceRanges: ['2001:db8::/32']\n" +
				"  selector: {app: dns, example.com/tier: ''}\n" +
				"  ports:\n  - {name: dns-udp, port: 53, protocol: UDP, targetPort: dns}\n  - {name: dns-tcp, port: 53, targetPort: 5353}\n"),
			want: meta + `{"ports":[{"name":"dns-udp","protocol":"UDP","port":53,"targetPort":"dns"},{"name":"dns-tcp","protocol":"TCP","port":53,"targetPort":5353}],` +
				`"selector":{"app":"dns","example.com/tier":""},"clusterIP":"fd00:96::20","type":"LoadBalancer","sessionAffinity":"None",` +
				`"loadBalancerIP":"2001:db8::10","loadBalancerSourceRanges":["2001:db8::/32"],"externalTrafficPolicy":"Cluster"}}`,
		},
		{
			name: "status dropped, unknown fields ignored, pool annotation kept",
			in: "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: x\n  annotations:\n    netloom.io/address-pool: lan\n" +
				"spec:\n  surprise: field\n  type: LoadBalancer\n" + port80 + "status:\n  loadBalancer:\n    ingress:\n    - ip: 192.168.1.240\n",
			want: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"x","annotations":{"netloom.io/address-pool":"lan"}},"spec":` +
				`{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"LoadBalancer","sessionAffinity":"None","externalTrafficPolicy":"Cluster"}}`,
		},
		{
			name: "ServiceList whose items have no kind or apiVersion",
			in:   `{"apiVersion":"v1","kind":"ServiceList","items":[{"metadata":{"name":"web","namespace":"x"},"spec":{"ports":[{"port":80}]}}]}`,
			want: meta + `{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"ClusterIP","sessionAffinity":"None"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(objs) != 1 {
				t.Fatalf("Parse returned %d objects, want 1", len(objs))
			}
			if diff := cmp.Diff(tt.want, string(objs[0].JSON)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			// The normalized form is a fixed point.
			again, err := FromJSON([]json.RawMessage{objs[0].JSON})
			if err != nil {
				t.Fatalf("FromJSON(normalized): %v", err)
			}
			if diff := cmp.Diff(string(objs[0].JSON), string(again[0].JSON)); diff != "" {
				t.Errorf("normalized form not stable (-first +second):\n%s", diff)
			}
		})
	}
}

func TestParseServiceErrors(t *testing.T) {
	const doc = "document 1 (Service x/web): "
	port := func(p string) string { return svcDoc("  ports:\n  - " + p + "\n") }
	lb := func(s string) string { return svcDoc("  type: LoadBalancer\n" + s + port80) }
	tests := []struct {
		name string
		in   string
		want string
	}{
		// metadata, shape
		{"name must be a DNS-1035 label", strings.Replace(svcDoc(port80), "name: web", "name: 1web", 1),
			`document 1 (Service x/1web): metadata.name: invalid name "1web": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')`},
		{"wrong apiVersion", strings.Replace(svcDoc(port80), "apiVersion: v1", "apiVersion: apps/v1", 1),
			doc + `apiVersion: "apps/v1" is not supported for kind Service (use v1)`},
		{"ports of the wrong type", svcDoc("  ports: 80\n"),
			doc + `spec.ports: expected list, got number`},
		{"port of the wrong type", port("port: http"),
			doc + `spec.ports[0].port: expected integer, got string`},
		{"targetPort of the wrong type", port("{port: 80, targetPort: [1]}"),
			doc + `spec.ports[0].targetPort: expected integer, got list`},
		{"bad pool annotation", strings.Replace(lb(""), "  namespace: x\n", "  namespace: x\n  annotations:\n    netloom.io/address-pool: Lan_1\n", 1),
			doc + `metadata.annotations[netloom.io/address-pool]: invalid AddressPool name "Lan_1": ` + msgLabel},
		{"empty pool annotation", strings.Replace(lb(""), "  namespace: x\n", "  namespace: x\n  annotations:\n    netloom.io/address-pool: ''\n", 1),
			doc + `metadata.annotations[netloom.io/address-pool]: invalid AddressPool name "": ` + msgLabel},

		// type
		{"nodePort on a ClusterIP service", svcDoc("  ports:\n  - port: 80\n    nodePort: 30080\n"),
			doc + `spec.ports[0].nodePort: only allowed with type NodePort or LoadBalancer (this Service is ClusterIP)`},
		{"ExternalName without a name", svcDoc("  type: ExternalName\n"),
			doc + `spec.externalName: required with type ExternalName (a DNS name, e.g. db.example.com)`},
		{"ExternalName with a bad name", svcDoc("  type: ExternalName\n  externalName: db_example\n"),
			doc + `spec.externalName: invalid DNS name "db_example": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"externalName on a ClusterIP service", svcDoc("  externalName: db.example.com\n" + port80),
			doc + `spec.externalName: only allowed with type ExternalName (this Service is ClusterIP)`},
		{"type in the wrong case", svcDoc("  type: loadbalancer\n" + port80),
			doc + `spec.type: unsupported type "loadbalancer": must be ClusterIP, NodePort, LoadBalancer or ExternalName`},

		// cluster IPs
		{"headless LoadBalancer", svcDoc("  type: LoadBalancer\n  clusterIP: None\n" + port80),
			doc + `spec.clusterIP: None (headless) is only allowed with type ClusterIP (this Service is LoadBalancer)`},
		{"headless in clusterIPs, an address in clusterIP", svcDoc("  clusterIP: 10.96.0.10\n  clusterIPs: [None]\n" + port80),
			doc + `spec.clusterIPs[0]: None differs from spec.clusterIP 10.96.0.10: they must be the same (or leave clusterIPs out)`},
		{"bad clusterIP", svcDoc("  clusterIP: 10.96.0.300\n" + port80),
			doc + `spec.clusterIP: invalid IP address "10.96.0.300" (e.g. 10.96.0.10, or leave it out to get one)`},
		{"clusterIP with a prefix length", svcDoc("  clusterIP: 10.96.0.3/32\n" + port80),
			doc + `spec.clusterIP: invalid IP address "10.96.0.3/32" (e.g. 10.96.0.10, or leave it out to get one)`},
		{"clusterIP with a zone", svcDoc("  clusterIP: 'fe80::1%eth0'\n" + port80),
			doc + `spec.clusterIP: invalid IP address "fe80::1%eth0": zones are not allowed`},
		{"clusterIP IPv4-mapped", svcDoc("  clusterIP: '::ffff:10.96.0.3'\n" + port80),
			doc + `spec.clusterIP: invalid IP address "::ffff:10.96.0.3": an IPv4-mapped IPv6 address (write it as an IPv4 address)`},
		{"two clusterIPs", svcDoc("  clusterIPs: [10.96.0.3, 'fd00::3']\n" + port80),
			doc + `spec.clusterIPs: 2 addresses: netloom gives a service one ClusterIP (list at most one)`},
		{"bad clusterIPs entry", svcDoc("  clusterIPs: [ten]\n" + port80),
			doc + `spec.clusterIPs[0]: invalid IP address "ten" (e.g. 10.96.0.10, or leave it out to get one)`},
		{"clusterIPs differs from clusterIP", svcDoc("  clusterIP: 10.96.0.3\n  clusterIPs: [10.96.0.4]\n" + port80),
			doc + `spec.clusterIPs[0]: 10.96.0.4 differs from spec.clusterIP 10.96.0.3: they must be the same (or leave clusterIPs out)`},

		// ports
		{"no ports", svcDoc("  selector: {app: web}\n"),
			doc + `spec.ports: required (list at least one port)`},
		{"no spec", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: x\n",
			doc + `spec.ports: required (list at least one port)`},
		{"empty ports", svcDoc("  ports: []\n"),
			doc + `spec.ports: required (list at least one port)`},
		{"unnamed port among several", svcDoc("  ports:\n  - {name: http, port: 80}\n  - {port: 443}\n"),
			doc + `spec.ports[1].name: required when the service has more than one port`},
		{"bad port name", port("{name: HTTP, port: 80}"),
			doc + `spec.ports[0].name: invalid port name "HTTP": ` + msgLabel},
		{"duplicate port name", svcDoc("  ports:\n  - {name: web, port: 80}\n  - {name: web, port: 443}\n"),
			doc + `spec.ports[1].name: duplicate port name "web" (also spec.ports[0])`},
		{"SCTP", port("{port: 80, protocol: SCTP}"),
			doc + `spec.ports[0].protocol: unknown protocol "SCTP": netloom supports TCP and UDP`},
		{"ICMP", port("{port: 80, protocol: ICMP}"),
			doc + `spec.ports[0].protocol: unknown protocol "ICMP": netloom supports TCP and UDP`},
		{"protocol is case sensitive", port("{port: 80, protocol: udp}"),
			doc + `spec.ports[0].protocol: unknown protocol "udp": netloom supports TCP and UDP`},
		{"missing port", port("{name: http, targetPort: 8080}"),
			doc + `spec.ports[0].port: invalid port 0: must be between 1 and 65535, inclusive`},
		{"port too large", port("port: 65536"),
			doc + `spec.ports[0].port: invalid port 65536: must be between 1 and 65535, inclusive`},
		{"negative port", port("port: -80"),
			doc + `spec.ports[0].port: invalid port -80: must be between 1 and 65535, inclusive`},
		{"targetPort too large", port("{port: 80, targetPort: 70000}"),
			doc + `spec.ports[0].targetPort: invalid port 70000: must be between 1 and 65535, inclusive`},
		{"bad targetPort name", port("{port: 80, targetPort: web_http}"),
			doc + `spec.ports[0].targetPort: invalid port name "web_http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)`},
		{"targetPort name of digits", port("{port: 80, targetPort: '8080'}"),
			doc + `spec.ports[0].targetPort: invalid port name "8080": must contain at least one letter (a-z)`},
		{"targetPort name too long", port("{port: 80, targetPort: abcdefghijklmnop}"),
			doc + `spec.ports[0].targetPort: invalid port name "abcdefghijklmnop": must be no more than 15 characters`},
		{"bad nodePort", port("{port: 80, nodePort: 70000}"),
			doc + `spec.ports[0].nodePort: invalid port 70000: must be between 1 and 65535, inclusive`},
		{"duplicate port and protocol", svcDoc("  ports:\n  - {name: a, port: 53, protocol: UDP}\n  - {name: b, port: 53}\n  - {name: c, port: 53, protocol: UDP}\n"),
			doc + `spec.ports[2]: duplicate port 53/UDP (also spec.ports[0])`},
		{"duplicate port with the default protocol", svcDoc("  ports:\n  - {name: a, port: 80, protocol: TCP}\n  - {name: b, port: 80, targetPort: 8080}\n"),
			doc + `spec.ports[1]: duplicate port 80/TCP (also spec.ports[0])`},

		// selector
		{"bad selector key", svcDoc("  selector:\n    a b: web\n" + port80),
			doc + `spec.selector: invalid label key "a b": ` + msgKeyName},
		{"bad selector key prefix", svcDoc("  selector:\n    Example.com/app: web\n" + port80),
			doc + `spec.selector: invalid label key "Example.com/app": prefix part ` + msgSubdomain},
		{"bad selector value", svcDoc("  selector:\n    app: a b\n" + port80),
			doc + `spec.selector[app]: invalid label value "a b": ` + msgValue},
		{"selector value of the wrong type", svcDoc("  selector:\n    replicas: 3\n" + port80),
			doc + `spec.selector[replicas]: expected string, got number (quote the value)`},
		{"selector of the wrong type", svcDoc("  selector: [app]\n" + port80),
			doc + `spec.selector: expected object, got list`},
		{"selector with matchLabels, as in a Deployment", svcDoc("  selector:\n    matchLabels:\n      app: web\n" + port80),
			doc + `spec.selector[matchLabels]: expected string, got object`},

		// LoadBalancer fields
		{"loadBalancerIP on a ClusterIP service", svcDoc("  loadBalancerIP: 192.168.1.240\n" + port80),
			doc + `spec.loadBalancerIP: only allowed with type LoadBalancer (this Service is ClusterIP)`},
		{"bad loadBalancerIP", lb("  loadBalancerIP: 192.168.1\n"),
			doc + `spec.loadBalancerIP: invalid IP address "192.168.1" (e.g. 192.168.1.240, or leave it out to get one)`},
		{"loadBalancerSourceRanges on a ClusterIP service", svcDoc("  loadBalancerSourceRanges: [10.0.0.0/8]\n" + port80),
			doc + `spec.loadBalancerSourceRanges: only allowed with type LoadBalancer (this Service is ClusterIP)`},
		{"source range without a prefix length", lb("  loadBalancerSourceRanges: [10.0.0.0/8, 192.168.1.7]\n"),
			doc + `spec.loadBalancerSourceRanges[1]: invalid CIDR "192.168.1.7": no prefix length (for this one address write 192.168.1.7/32)`},
		{"bad source range", lb("  loadBalancerSourceRanges: [10.0.0.0/33]\n"),
			doc + `spec.loadBalancerSourceRanges[0]: invalid CIDR "10.0.0.0/33": prefix length out of range (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"source range not an address", lb("  loadBalancerSourceRanges: [office]\n"),
			doc + `spec.loadBalancerSourceRanges[0]: invalid CIDR "office": not an address with a prefix length (e.g. 10.0.0.0/8 or fd00::/64)`},
		{"loopback externalIP", svcDoc("  externalIPs: [127.0.0.1]\n" + port80),
			doc + `spec.externalIPs[0]: 127.0.0.1 is not a unicast address a client can reach (use an address routed to the nodes)`},
		{"duplicate externalIP", svcDoc("  externalIPs: [192.168.1.9, 192.168.1.9]\n" + port80),
			doc + `spec.externalIPs[1]: duplicate address 192.168.1.9`},

		// policies
		{"bad externalTrafficPolicy", lb("  externalTrafficPolicy: local\n"),
			doc + `spec.externalTrafficPolicy: unsupported policy "local": must be Cluster or Local`},
		{"legacy externalTrafficPolicy", lb("  externalTrafficPolicy: OnlyLocal\n"),
			doc + `spec.externalTrafficPolicy: unsupported policy "OnlyLocal": must be Cluster or Local`},
		{"Local on a ClusterIP service", svcDoc("  externalTrafficPolicy: Local\n" + port80),
			doc + `spec.externalTrafficPolicy: Local is only allowed with type NodePort or LoadBalancer, or with externalIPs (this Service is ClusterIP)`},
		{"healthCheckNodePort with Cluster", svcDoc("  type: LoadBalancer\n  healthCheckNodePort: 30999\n" + port80),
			doc + `spec.healthCheckNodePort: only allowed with type LoadBalancer and externalTrafficPolicy Local`},
		{"bad internalTrafficPolicy", svcDoc("  internalTrafficPolicy: Everywhere\n" + port80),
			doc + `spec.internalTrafficPolicy: unsupported policy "Everywhere": must be Cluster or Local`},
		{"RequireDualStack", svcDoc("  ipFamilyPolicy: RequireDualStack\n" + port80),
			doc + `spec.ipFamilyPolicy: RequireDualStack is not supported: netloom gives a service addresses of one IP family (use SingleStack or leave it out)`},
		{"bad ipFamilyPolicy", svcDoc("  ipFamilyPolicy: DualStack\n" + port80),
			doc + `spec.ipFamilyPolicy: unsupported policy "DualStack": must be SingleStack or PreferDualStack`},

		// session affinity
		{"bad sessionAffinity", svcDoc("  sessionAffinity: Cookie\n" + port80),
			doc + `spec.sessionAffinity: unsupported session affinity "Cookie": must be None or ClientIP`},
		{"sessionAffinityConfig without ClientIP", svcDoc("  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 60\n" + port80),
			doc + `spec.sessionAffinityConfig: only allowed with sessionAffinity ClientIP`},
		{"timeout 0", svcDoc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 0\n" + port80),
			doc + `spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid timeout 0: must be between 1 and 86400 seconds, inclusive`},
		{"timeout over a day", svcDoc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 86401\n" + port80),
			doc + `spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid timeout 86401: must be between 1 and 86400 seconds, inclusive`},
		{"timeout of the wrong type", svcDoc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 3h\n" + port80),
			doc + `spec.sessionAffinityConfig.clientIP.timeoutSeconds: expected integer, got string`},

		// all or nothing
		{"a bad service after a good one rejects the file", svcDoc(port80) + "---\n" + strings.Replace(svcDoc("  type: Nodeport\n"+port80), "name: web", "name: api", 1),
			`document 2 (Service x/api): spec.type: unsupported type "Nodeport": must be ClusterIP, NodePort, LoadBalancer or ExternalName`},
		{"duplicate service", svcDoc(port80) + "---\n" + svcDoc(port80),
			`document 2 (Service x/web): duplicate of document 1 (same kind, namespace and name)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %v, want error %q", summarize(objs), tt.want)
			}
			if objs != nil {
				t.Errorf("Parse returned %d objects with its error, want none", len(objs))
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has more than one line: %q", err)
			}
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Errorf("error is %T, want *DocumentError", err)
			}
		})
	}
}

func TestServiceKind(t *testing.T) {
	for _, in := range []string{"services", "service", "svc", "Service", "SVC", " services "} {
		k, err := NormalizeKind(in)
		if err != nil || k != "Service" {
			t.Errorf("NormalizeKind(%q) = %q, %v; want Service", in, k, err)
		}
	}
	if k, ok := Lookup("Service"); !ok || !k.Namespaced || k.APIVersions[0] != "v1" {
		t.Errorf("Lookup(Service) = %+v, %v", k, ok)
	}
}

func TestDecodeService(t *testing.T) {
	if _, err := DecodeService(json.RawMessage(podWeb)); err == nil || err.Error() != `decode Service: object is of kind "Pod"` {
		t.Errorf("DecodeService(pod) error = %v", err)
	}
	if _, err := DecodeService(json.RawMessage(`{"kind":"Service","spec":{"ports":[{"port":"80"}]}}`)); err == nil ||
		err.Error() != `decode Service: spec.ports[0].port: expected integer, got string` {
		t.Errorf("DecodeService(bad) error = %v", err)
	}
}

func TestLBService(t *testing.T) {
	raws := mustParse(t, svcDoc("  selector: {app: web}\n  clusterIPs: [10.96.0.20]\n"+port80))
	svc, err := DecodeService(raws[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := LBService(svc)
	if err != nil {
		t.Fatalf("LBService: %v", err)
	}
	want := lb.Service{
		Namespace: "x", Name: "web", Type: lb.TypeClusterIP,
		Selector:  map[string]string{"app": "web"},
		Ports:     []lb.ServicePort{{Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80)}},
		ClusterIP: netip.MustParseAddr("10.96.0.20"),
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("LBService (-want +got):\n%s", diff)
	}

	// Objects that never passed validation: defaults filled, garbage named.
	bare := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 53}}, SessionAffinity: corev1.ServiceAffinityClientIP}}
	bare.Namespace, bare.Name = "x", "dns"
	got, err = LBService(bare)
	if err != nil {
		t.Fatalf("LBService(bare): %v", err)
	}
	want = lb.Service{Namespace: "x", Name: "dns", Type: lb.TypeClusterIP, SessionAffinity: true,
		Ports: []lb.ServicePort{{Protocol: "TCP", Port: 53, TargetPort: intstr.FromInt32(53)}}}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("LBService(bare) (-want +got):\n%s", diff)
	}
	bad := bare.DeepCopy()
	bad.Spec.LoadBalancerIP = "nope"
	if _, err := LBService(bad); err == nil || err.Error() != `lb service x/dns: spec.loadBalancerIP: invalid IP address "nope" (e.g. 192.168.1.240, or leave it out to get one)` {
		t.Errorf("LBService(bad) error = %v", err)
	}
	bad = bare.DeepCopy()
	bad.Spec.Ports[0].Port = 0
	if _, err := LBService(bad); err == nil || err.Error() != `lb service x/dns: spec.ports[0].port: invalid port 0` {
		t.Errorf("LBService(port 0) error = %v", err)
	}
}

func TestServiceTable(t *testing.T) {
	raws := mustParse(t, yamlServiceExported+"---\n"+
		svcDoc("  ports:\n  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53}\n")+"---\n"+
		strings.Replace(svcDoc("  type: LoadBalancer\n"+port80), "name: web", "name: api", 1)+"---\n"+
		strings.Replace(svcDoc("  type: LoadBalancer\n"+port80), "name: web", "name: full", 1))

	// The stored documents, without what the agent knows: the exported
	// shop/web says which clusterIP it asks for.
	rows, err := Table("Service", raws)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want := [][]string{
		{"NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS", "ANNOUNCED-BY"},
		{"shop", "web", "LoadBalancer", "10.96.14.7", "<none>", "80:30080/TCP,53:30053/UDP", "<none>"},
		{"x", "api", "LoadBalancer", "<none>", "<none>", "80/TCP", "<none>"},
		{"x", "full", "LoadBalancer", "<none>", "<none>", "80/TCP", "<none>"},
		{"x", "web", "ClusterIP", "<none>", "<none>", "53/UDP,53/TCP", "<none>"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Service) (-want +got):\n%s", diff)
	}

	// With it, no service pending: no REASON column.
	where := map[string]ServicePlace{
		"shop/web": {ClusterIP: "10.96.14.7", ExternalIP: "192.168.1.241", Owner: "edge-2"},
		"x/web":    {ClusterIP: "10.96.0.10"},
		"x/api":    {ClusterIP: "10.96.0.11", ExternalIP: "192.168.1.242", Owner: "edge-1"},
	}
	view := func(key string, raw json.RawMessage) (json.RawMessage, error) { return ServiceView(raw, where[key]) }
	rows, err = Table("Service", viewAll(t, raws, view))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want = [][]string{
		{"NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS", "ANNOUNCED-BY"},
		{"shop", "web", "LoadBalancer", "10.96.14.7", "192.168.1.241", "80:30080/TCP,53:30053/UDP", "edge-2"},
		{"x", "api", "LoadBalancer", "10.96.0.11", "192.168.1.242", "80/TCP", "edge-1"},
		{"x", "full", "LoadBalancer", "<none>", "<none>", "80/TCP", "<none>"},
		{"x", "web", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP", "<none>"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Service) of views (-want +got):\n%s", diff)
	}

	// A full pool and a full service CIDR: <pending>, and the reasons.
	where["x/full"] = ServicePlace{ClusterIP: "10.96.0.12", Pending: "AddressPool lan is full"}
	where["x/web"] = ServicePlace{Pending: "service CIDR 10.96.0.0/16 is full"}
	rows, err = Table("Service", viewAll(t, raws, view))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want = [][]string{
		{"NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS", "ANNOUNCED-BY", "REASON"},
		{"shop", "web", "LoadBalancer", "10.96.14.7", "192.168.1.241", "80:30080/TCP,53:30053/UDP", "edge-2", "<none>"},
		{"x", "api", "LoadBalancer", "10.96.0.11", "192.168.1.242", "80/TCP", "edge-1", "<none>"},
		{"x", "full", "LoadBalancer", "10.96.0.12", "<pending>", "80/TCP", "<none>", "AddressPool lan is full"},
		{"x", "web", "ClusterIP", "<pending>", "<none>", "53/UDP,53/TCP", "<none>", "service CIDR 10.96.0.0/16 is full"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Service) with pending (-want +got):\n%s", diff)
	}

	// A conflict: the service has another address, and says which it lost.
	where["x/api"] = ServicePlace{ClusterIP: "10.96.0.11", ExternalIP: "192.168.1.243", Owner: "edge-1", Conflict: "requested address 192.168.1.242 is held by older service shop/web"}
	conflictRows, err := Table("Service", viewAll(t, raws, view))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	wantRow := []string{"x", "api", "LoadBalancer", "10.96.0.11", "192.168.1.243", "80/TCP", "edge-1", "conflict: requested address 192.168.1.242 is held by older service shop/web"}
	if diff := cmp.Diff(wantRow, conflictRows[2]); diff != "" {
		t.Errorf("Table(Service) with a conflict (-want +got):\n%s", diff)
	}

	// Node ports the agent allocated, an ExternalName and a headless
	// service: kubectl's PORTS, and why they are not proxied.
	where["x/api"] = ServicePlace{ClusterIP: "10.96.0.11", ExternalIP: "192.168.1.242", Owner: "edge-1", NodePorts: []uint16{31234}, HealthCheckNodePort: 31999}
	ext := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: x}\nspec: {type: ExternalName, externalName: db.example.com}\n")
	hl := svcObj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: peers, namespace: x}\nspec: {clusterIP: None, externalIPs: [], ports: [{port: 7000}]}\n")
	more, err := Table("Service", viewAll(t, append(raws, ext, hl), view))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	for _, row := range [][]string{
		{"x", "api", "LoadBalancer", "10.96.0.11", "192.168.1.242", "80:31234/TCP", "edge-1", "<none>"},
		{"x", "db", "ExternalName", "<none>", "db.example.com", "<none>", "<none>", "not proxied: an ExternalName service is a DNS name only"},
		{"x", "peers", "ClusterIP", "None", "<none>", "7000/TCP", "<none>", "not proxied: a headless service (clusterIP: None) has endpoints only"},
	} {
		if !slices.ContainsFunc(more, func(r []string) bool { return slices.Equal(r, row) }) {
			t.Errorf("no row %q in\n%q", row, more)
		}
	}

	var buf bytes.Buffer
	if err := WriteTable(&buf, rows[:4]); err != nil {
		t.Fatal(err)
	}
	wantText := "" +
		"NAMESPACE   NAME   TYPE           CLUSTER-IP   EXTERNAL-IP     PORTS                       ANNOUNCED-BY   REASON\n" +
		"shop        web    LoadBalancer   10.96.14.7   192.168.1.241   80:30080/TCP,53:30053/UDP   edge-2         <none>\n" +
		"x           api    LoadBalancer   10.96.0.11   192.168.1.242   80/TCP                      edge-1         <none>\n" +
		"x           full   LoadBalancer   10.96.0.12   <pending>       80/TCP                      <none>         AddressPool lan is full\n"
	if diff := cmp.Diff(wantText, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}

	if _, err := Table("Service", []json.RawMessage{json.RawMessage(podWeb)}); err == nil ||
		err.Error() != `service table: decode Service: object is of kind "Pod"` {
		t.Errorf("Table(Service, pod) error = %v", err)
	}
	rows, err = Table("Service", nil)
	if err != nil || len(rows) != 1 {
		t.Errorf("Table(Service, nil) = %v, %v; want the header only", rows, err)
	}
}

func TestPortsString(t *testing.T) {
	tests := []struct {
		ports []corev1.ServicePort
		want  string
	}{
		{nil, "<none>"},
		{[]corev1.ServicePort{{Port: 80}}, "80/TCP"},
		{[]corev1.ServicePort{{Port: 80, Protocol: "TCP", NodePort: 30080}, {Port: 53, Protocol: "UDP"}}, "80:30080/TCP,53/UDP"},
	}
	for _, tt := range tests {
		if got := PortsString(tt.ports); got != tt.want {
			t.Errorf("PortsString(%+v) = %q, want %q", tt.ports, got, tt.want)
		}
	}
}

// TestLBServiceKinds converts every kind of service netloom accepts.
func TestLBServiceKinds(t *testing.T) {
	port80 := []lb.ServicePort{{Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80)}}
	for _, tt := range []struct {
		name, spec string
		want       lb.Service
	}{
		{"NodePort with a requested port", "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 30080\n",
			lb.Service{Type: lb.TypeNodePort, NodePorts: true, ExternalTrafficPolicy: lb.PolicyCluster,
				Ports: []lb.ServicePort{{Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(80), NodePort: 30080}}}},
		{"LoadBalancer without node ports, Local, health check", "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 30999\n  ports:\n  - port: 80\n",
			lb.Service{Type: lb.TypeLoadBalancer, ExternalTrafficPolicy: lb.PolicyLocal, HealthCheckNodePort: 30999, Ports: port80}},
		{"LoadBalancer: node ports by default", "  type: LoadBalancer\n  ports:\n  - port: 80\n",
			lb.Service{Type: lb.TypeLoadBalancer, NodePorts: true, ExternalTrafficPolicy: lb.PolicyCluster, Ports: port80}},
		{"externalIPs, internalTrafficPolicy Local, publishNotReadyAddresses", "  externalIPs: [192.168.1.50]\n  internalTrafficPolicy: Local\n  publishNotReadyAddresses: true\n  ports:\n  - port: 80\n",
			lb.Service{Type: lb.TypeClusterIP, ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.1.50")}, ExternalTrafficPolicy: lb.PolicyCluster,
				InternalTrafficPolicy: lb.PolicyLocal, PublishNotReady: true, Ports: port80}},
		{"headless", "  clusterIP: None\n  ports:\n  - port: 80\n",
			lb.Service{Type: lb.TypeClusterIP, Headless: true, Ports: port80}},
		{"headless without ports", "  clusterIPs: [None]\n",
			lb.Service{Type: lb.TypeClusterIP, Headless: true}},
		{"ExternalName", "  type: ExternalName\n  externalName: db.example.com\n",
			lb.Service{Type: lb.TypeExternalName}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: x\nspec:\n" + tt.spec))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			svc, err := DecodeService(objs[0].JSON)
			if err != nil {
				t.Fatal(err)
			}
			got, err := LBService(svc)
			if err != nil {
				t.Fatalf("LBService: %v", err)
			}
			tt.want.Namespace, tt.want.Name = "x", "web"
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("LBService (-want +got):\n%s", diff)
			}
			if (got.Type == lb.TypeExternalName || got.Headless) == got.Proxied() {
				t.Errorf("Proxied() = %v", got.Proxied())
			}
		})
	}
}

// svcObj parses one Service manifest into its stored form.
func svcObj(t *testing.T, doc string) json.RawMessage {
	t.Helper()
	objs, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return objs[0].JSON
}
