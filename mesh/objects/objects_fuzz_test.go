package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzManifests are the seeds of FuzzParse: valid manifests of every kind
// in YAML and JSON, several documents and Lists, and slightly broken ones
// (taken from this package's tests; copied, so that the fuzz target does
// not depend on the tests' helpers).
var fuzzManifests = []string{
	// Namespace, YAML and JSON.
	"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    env: prod\n",
	`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a","labels":{"env":"prod"}}}`,
	"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\nspec:\n  finalizers: [kubernetes]\n",
	// Pods.
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: team-a\n  labels:\n    app: web\nspec:\n  containers:\n  - name: web\n    image: nginx\n    ports:\n    - name: http\n      containerPort: 80\n",
	`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"default"},"spec":{"containers":[{"name":"pg","image":"postgres","ports":[{"containerPort":5432,"protocol":"TCP"},{"name":"dns","containerPort":53,"protocol":"UDP"}],"resources":{}}]}}`,
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    note: hello world\n  labels:\n    canary: \"\"\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: a\n    resources:\n      requests:\n        cpu: 250m\n        memory: 128Mi\n    livenessProbe:\n      tcpSocket:\n        port: http\n",
	// Several documents, comments, CRLF, a JSON document among YAML ones.
	"# my cluster\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n--- # the pod\r\napiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: p\r\n  namespace: a\r\n---\n---\n# apiVersion: v1\n",
	`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}` + "\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n",
	// JSON array and stream.
	`[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"a"}}]`,
	`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}` + "\n" + `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}` + "\n",
	// Lists.
	"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n",
	`{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}`,
	`{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"db"},"spec":{"containers":[{"name":"pg","image":"postgres","ports":[{"containerPort":5432},{"name":"dns","containerPort":53,"protocol":"UDP"}]}]}}]}`,
	`{"apiVersion":"netloom.io/v1alpha1","kind":"AddressPoolList","items":[{"metadata":{"name":"lan"},"spec":{"addresses":["10.77.0.1"],"autoAssign":true}}]}`,
	"apiVersion: v1\nkind: List\nitems: []\n",
	// NetworkPolicy.
	"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: test-network-policy\n  namespace: default\nspec:\n  podSelector:\n    matchLabels:\n      role: db\n  policyTypes:\n  - Ingress\n  - Egress\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 172.17.0.0/16\n        except:\n        - 172.17.1.0/24\n    - namespaceSelector:\n        matchLabels:\n          project: myproject\n    - podSelector:\n        matchExpressions:\n        - {key: role, operator: In, values: [frontend]}\n    ports:\n    - protocol: TCP\n      port: 6379\n      endPort: 6380\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/24\n    ports:\n    - protocol: UDP\n      port: dns\n",
	`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"default"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`,
	// Services.
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    netloom.io/address-pool: lan\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 192.168.1.241\n  loadBalancerSourceRanges:\n  - 192.168.0.0/16\n  externalTrafficPolicy: Local\n  selector:\n    app: web\n  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 600\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n  - name: dns\n    port: 53\n    protocol: UDP\n    targetPort: 5353\n",
	`{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"x"},"spec":{"clusterIP":"None","selector":{"app":"db"},"ports":[{"port":5432}]}}`,
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: example.com\n",
	// AddressPools.
	"apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses:\n  - 192.168.1.240/29\n  - 192.168.1.250 - 192.168.1.252\n  - 192.168.1.254\n  - '2001:db8::/120'\n  autoAssign: false\n",
	// Broken: unknown or missing kind, bad apiVersion, YAML and JSON errors,
	// tabs, duplicates, bad names, labels, ports, types.
	"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
	"apiVersion: v1\nmetadata:\n  name: web\n",
	"kind: Namespace\nmetadata:\n  name: shop\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n    labels: {}\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n\tname: web\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  name: db\n",
	"- apiVersion: v1\n  kind: Namespace\n",
	"just words\n",
	"[\n" + `{"apiVersion": "v1", "kind": "Pod" "metadata": {}}` + "\n]",
	`{"apiVersion": "v1", "kind": "Pod"`,
	`[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}, 42, null]`,
	`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","labels":{"x":"1"},"labels":{"y":"2"}}}`,
	"apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: web-\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: Web_1\n  namespace: Team_A\n  labels:\n    a b: x\n    replicas: 3\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    ports:\n    - name: http_x\n      containerPort: 70000\n      hostPort: -1\n      protocol: tcp\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n    name: web\n",
	"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: a\n    resources:\n      requests:\n        cpu: lots\n",
	`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"List","items":[]}]}`,
	"apiVersion: v1\nkind: List\nitems: 3\n",
	"apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [10.0.0.9 - 10.0.0.1, nonsense]\n",
	"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 0\n    targetPort: -5\n",
	// Characters json.Marshal leaves raw that YAML refuses raw (DEL, C1
	// controls, U+FFFE): `netloom get -o yaml` must still print the object.
	"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"a\",\"annotations\":{\"n\":\"del\x7f nel\u0085 c1\u009f fffe\uFFFE \\u0001\"}}}",
	"\xef\xbb\xbf{}",
	"",
	"null",
	"[]",
	"a: &a [*a, *a]\n",
}

// FuzzParse: Parse never panics; an error is one *DocumentError of one
// line and comes without objects; on success every object is complete, has
// a kind netloom accepts, is unique, decodes as its kind, and its normalized
// JSON parses again to the same object (also through the YAML that
// `netloom get -o yaml` prints).
func FuzzParse(f *testing.F) {
	for _, s := range fuzzManifests {
		f.Add([]byte(s))
	}
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Parse(data)
		if err != nil {
			checkParseError(t, objs, err)
			return
		}
		checkObjects(t, objs)
		var raws []json.RawMessage
		for _, o := range objs {
			raws = append(raws, o.JSON)
			again, err := Parse(o.JSON)
			if err != nil {
				t.Fatalf("Parse(normalized %s) = %v; normalized: %s", o, err, o.JSON)
			}
			if diff := cmp.Diff(fuzzSummary([]Object{o}), fuzzSummary(again)); diff != "" {
				t.Fatalf("normalized form is not stable (-first +second):\n%s", diff)
			}
			y, err := ToYAML(o.JSON)
			if err != nil {
				t.Fatalf("ToYAML(%s): %v", o, err)
			}
			fromYAML, err := Parse(y)
			if err != nil {
				t.Fatalf("Parse(ToYAML(%s)) = %v; yaml:\n%s", o, err, y)
			}
			if diff := cmp.Diff(fuzzSummary([]Object{o}), fuzzSummary(fromYAML)); diff != "" {
				t.Fatalf("normalized form does not survive YAML (-first +second):\n%s", diff)
			}
		}
		// What the API stores is what FromJSON accepts again.
		again, err := FromJSON(raws)
		if err != nil {
			t.Fatalf("FromJSON(normalized) = %v", err)
		}
		if diff := cmp.Diff(fuzzSummary(objs), fuzzSummary(again)); diff != "" {
			t.Fatalf("FromJSON(normalized) differs (-Parse +FromJSON):\n%s", diff)
		}
	})
}

func checkParseError(t *testing.T, objs []Object, err error) {
	t.Helper()
	if objs != nil {
		t.Errorf("Parse returned %d objects with its error %q", len(objs), err)
	}
	var de *DocumentError
	if !errors.As(err, &de) {
		t.Errorf("Parse error is %T, want *DocumentError: %v", err, err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("Parse error has more than one line: %q", msg)
	}
	if !strings.HasPrefix(msg, "document ") {
		t.Errorf("Parse error does not name its document: %q", msg)
	}
}

// checkObjects checks what Parse promises about the objects it returns.
func checkObjects(t *testing.T, objs []Object) {
	t.Helper()
	seen := map[objKey]bool{}
	for _, o := range objs {
		info, ok := Lookup(o.Kind)
		if !ok {
			t.Fatalf("Parse returned an object of kind %q", o.Kind)
		}
		if o.Name == "" {
			t.Fatalf("Parse returned %s without a name", o)
		}
		if info.Namespaced == (o.Namespace == "") {
			t.Fatalf("Parse returned %s: namespace %q for a kind with Namespaced=%v", o, o.Namespace, info.Namespaced)
		}
		k := objKey{o.Kind, o.Namespace, o.Name}
		if seen[k] {
			t.Fatalf("Parse returned %s twice", o)
		}
		seen[k] = true
		if !json.Valid(o.JSON) || !bytes.HasPrefix(o.JSON, []byte("{")) {
			t.Fatalf("Parse returned %s with JSON that is not an object: %q", o, o.JSON)
		}
		// The kind's decoder accepts the stored form, and the kind's
		// conversions succeed for what passed validation.
		var name, ns string
		switch o.Kind {
		case "Namespace":
			v, err := DecodeNamespace(o.JSON)
			if err != nil {
				t.Fatalf("DecodeNamespace(%s): %v", o, err)
			}
			name, ns = v.Name, v.Namespace
		case "Pod":
			v, err := DecodePod(o.JSON)
			if err != nil {
				t.Fatalf("DecodePod(%s): %v", o, err)
			}
			name, ns = v.Name, v.Namespace
		case "NetworkPolicy":
			v, err := DecodeNetworkPolicy(o.JSON)
			if err != nil {
				t.Fatalf("DecodeNetworkPolicy(%s): %v", o, err)
			}
			name, ns = v.Name, v.Namespace
		case "Service":
			v, err := DecodeService(o.JSON)
			if err != nil {
				t.Fatalf("DecodeService(%s): %v", o, err)
			}
			if _, err := LBService(v); err != nil {
				t.Fatalf("LBService(%s) of a validated service: %v", o, err)
			}
			name, ns = v.Name, v.Namespace
		case "AddressPool":
			v, err := DecodeAddressPool(o.JSON)
			if err != nil {
				t.Fatalf("DecodeAddressPool(%s): %v", o, err)
			}
			if _, err := v.LBPool(); err != nil {
				t.Fatalf("LBPool(%s) of a validated pool: %v", o, err)
			}
			name, ns = v.Name, v.Namespace
		}
		if name != o.Name || ns != o.Namespace {
			t.Fatalf("%s decodes as %q/%q", o, ns, name)
		}
		if _, err := Table(o.Kind, []json.RawMessage{o.JSON}); err != nil {
			t.Fatalf("Table(%s): %v", o, err)
		}
	}
}

// fuzzSummary is what FuzzParse compares: the objects with their JSON as a
// string (its own copy of the tests' summarize).
func fuzzSummary(objs []Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Kind+" "+o.Namespace+" "+o.Name+" "+string(o.JSON))
	}
	return out
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestParseAllocationBound: small manifests built to make the parser work
// hard are refused, or located, with work in proportion to their size.
// Before walk kept its path up to date instead of copying it for every
// value, the 50 kB deeply nested document with a type error after it
// allocated 3.5 GB (and took seconds); a 1 MiB one, minutes.
func TestParseAllocationBound(t *testing.T) {
	nest := func(depth, n int) string {
		return strings.Repeat("[", depth) + strings.Repeat("0,", n) + "0" + strings.Repeat("]", depth)
	}
	aliases := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\nx0: &x0 [a,a,a,a,a,a,a,a,a,a]\n"
	for i := 1; i < 9; i++ {
		aliases += fmt.Sprintf("x%d: &x%d [*x%d,*x%d,*x%d,*x%d,*x%d,*x%d,*x%d,*x%d,*x%d,*x%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	tests := []struct {
		name, in, err string
	}{
		{
			name: "deep list before a type error",
			in:   `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"x":` + nest(5000, 20000) + `,"spec":{"containers":5}}`,
			err:  "spec.containers: expected list, got number",
		},
		{
			name: "deep list in an int-or-string",
			in:   `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"x":` + nest(5000, 20000) + `,"spec":{"containers":[{"name":"a","livenessProbe":{"tcpSocket":{"port":` + nest(5000, 1) + `}}}]}}`,
			err:  "spec.containers[0].livenessProbe.tcpSocket.port: expected integer, got list",
		},
		{
			name: "YAML alias bomb",
			in:   aliases,
			err:  "excessive aliasing",
		},
		{
			name: "deep YAML",
			in:   "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\nspec: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n",
			err:  "exceeded max depth",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = Parse([]byte(tt.in)) })
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Parse error = %v, want one containing %q", err, tt.err)
			}
			if limit := uint64(64 << 20); n > limit {
				t.Errorf("Parse of %d bytes allocated %d MiB, more than %d MiB", len(tt.in), n>>20, limit>>20)
			}
		})
	}
}
