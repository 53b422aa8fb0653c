package objects

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// got is what the tests compare: objects with their JSON as a string.
type got struct {
	Kind, Namespace, Name, JSON string
}

func summarize(objs []Object) []got {
	var out []got
	for _, o := range objs {
		out = append(out, got{o.Kind, o.Namespace, o.Name, string(o.JSON)})
	}
	return out
}

const (
	nsTeamA = `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a","labels":{"env":"prod"}}}`
	podWeb  = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"team-a","labels":{"app":"web"}},` +
		`"spec":{"containers":[{"name":"web","image":"nginx","ports":[{"name":"http","containerPort":80,"protocol":"TCP"}],"resources":{}}]}}`
	podDB = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"default"},` +
		`"spec":{"containers":[{"name":"pg","image":"postgres","ports":[{"containerPort":5432,"protocol":"TCP"},{"name":"dns","containerPort":53,"protocol":"UDP"}],"resources":{}}]}}`
)

var (
	wantNS  = got{"Namespace", "", "team-a", nsTeamA}
	wantWeb = got{"Pod", "team-a", "web", podWeb}
	wantDB  = got{"Pod", "default", "db", podDB}
)

const yamlNS = `apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels:
    env: prod
`

const yamlWeb = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team-a
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx
    ports:
    - name: http
      containerPort: 80
`

const yamlDB = `apiVersion: v1
kind: Pod
metadata:
  name: db
spec:
  containers:
  - name: pg
    image: postgres
    ports:
    - containerPort: 5432
      protocol: TCP
    - name: dns
      containerPort: 53
      protocol: UDP
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{
			name: "multi-document YAML",
			in:   yamlNS + "---\n" + yamlWeb + "---\n" + yamlDB,
			want: []got{wantNS, wantWeb, wantDB},
		},
		{
			name: "leading separator, empty and comment-only documents, commented separators, CRLF",
			in: "# my cluster\n---\n" + yamlNS + "--- # the web pod\n" + yamlWeb + "---\n---\n# apiVersion: v1\n# kind: Pod\n   \n---\n" +
				strings.ReplaceAll(yamlDB, "\n", "\r\n") + "---\n",
			want: []got{wantNS, wantWeb, wantDB},
		},
		{
			name: "JSON single object",
			in:   nsTeamA,
			want: []got{wantNS},
		},
		{
			name: "JSON array",
			in:   "[\n" + nsTeamA + ",\n" + podWeb + "\n]\n",
			want: []got{wantNS, wantWeb},
		},
		{
			name: "JSON stream of objects",
			in:   nsTeamA + "\n" + podWeb + "\n",
			want: []got{wantNS, wantWeb},
		},
		{
			name: "YAML document written as JSON among YAML documents",
			in:   nsTeamA + "\n---\n" + yamlWeb,
			want: []got{wantNS, wantWeb},
		},
		{
			name: "List in YAML",
			in: "apiVersion: v1\nkind: List\nitems:\n" +
				indentItem(yamlNS) + indentItem(yamlWeb),
			want: []got{wantNS, wantWeb},
		},
		{
			name: "List in JSON, as kubectl get -o json prints it",
			in:   `{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[` + nsTeamA + "," + podWeb + `]}`,
			want: []got{wantNS, wantWeb},
		},
		{
			name: "PodList whose items have no kind or apiVersion",
			in:   `{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"db"},"spec":{"containers":[{"name":"pg","image":"postgres","ports":[{"containerPort":5432},{"name":"dns","containerPort":53,"protocol":"UDP"}]}]}}]}`,
			want: []got{wantDB},
		},
		{
			name: "empty List",
			in:   "apiVersion: v1\nkind: List\nitems: []\n",
		},
		{
			name: "defaults: namespace default, protocol TCP; namespace of a Namespace is dropped",
			in:   yamlDB + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  namespace: ignored\n  labels:\n    env: prod\n",
			want: []got{wantDB, wantNS},
		},
		{
			name: "server fields and status dropped, unknown fields ignored, last-applied dropped",
			in: `apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  uid: 0b7c
  resourceVersion: "42"
  creationTimestamp: "2024-05-02T09:14:11Z"
  managedFields:
  - manager: kubectl
    operation: Update
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{}'
  labels:
    env: prod
  surprise: field
spec:
  finalizers: []
status:
  phase: Active
`,
			want: []got{wantNS},
		},
		{
			name: "Namespace finalizers kept",
			in:   "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\nspec:\n  finalizers: [kubernetes]\n",
			want: []got{{"Namespace", "", "x", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"},"spec":{"finalizers":["kubernetes"]}}`}},
		},
		{
			name: "annotations and empty label value kept",
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    note: hello world\n  labels:\n    canary: \"\"\n",
			want: []got{{"Pod", "default", "p", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","labels":{"canary":""},"annotations":{"note":"hello world"}},"spec":{"containers":null}}`}},
		},
		{
			name: "same name in other namespaces or kinds is no duplicate",
			in: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  namespace: b\n" +
				"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n",
			want: []got{
				{"Pod", "default", "x", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","namespace":"default"},"spec":{"containers":null}}`},
				{"Pod", "b", "x", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","namespace":"b"},"spec":{"containers":null}}`},
				{"Namespace", "", "x", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}`},
			},
		},
		{name: "empty input", in: ""},
		{name: "comments only", in: "# nothing yet\n---\n# still nothing\n"},
		{name: "empty JSON array", in: "[]"},
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
			// The normalized form parses to itself.
			for _, o := range objs {
				again, err := Parse(o.JSON)
				if err != nil {
					t.Fatalf("Parse(normalized %s): %v", o, err)
				}
				if diff := cmp.Diff(summarize([]Object{o}), summarize(again)); diff != "" {
					t.Errorf("normalized form is not stable (-first +second):\n%s", diff)
				}
			}
		})
	}
}

// indentItem turns a YAML document into an item of a YAML list.
func indentItem(doc string) string {
	lines := strings.Split(strings.TrimSuffix(doc, "\n"), "\n")
	for i, l := range lines {
		if i == 0 {
			lines[i] = "- " + l
		} else {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// Messages of k8s.io/apimachinery's validation functions, as of v0.37.
const (
	msgSubdomain = `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`
	msgLabel     = `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`
	msgKeyName   = `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`
	msgValue     = `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`
)

func pod(meta, spec string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n" + meta + "spec:\n" + spec
}

func ports(p string) string {
	return "  containers:\n  - name: web\n    image: nginx\n    ports:\n" + p
}

func TestParseErrors(t *testing.T) {
	web := "  name: web\n"
	port80 := ports("    - containerPort: 80\n")
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "unknown kind",
			in:   yamlNS + "---\n" + yamlWeb + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
			want: `document 3: unknown kind "Deployment" (netloom accepts Namespace, Pod, NetworkPolicy, Service, AddressPool)`,
		},
		{
			name: "kind in the wrong case",
			in:   "apiVersion: v1\nkind: pod\nmetadata:\n  name: web\n",
			want: `document 1: unknown kind "pod" (netloom accepts Namespace, Pod, NetworkPolicy, Service, AddressPool)`,
		},
		{
			name: "missing kind",
			in:   "apiVersion: v1\nmetadata:\n  name: web\n",
			want: `document 1: kind: required (netloom accepts Namespace, Pod, NetworkPolicy, Service, AddressPool)`,
		},
		{
			name: "wrong apiVersion",
			in:   "apiVersion: apps/v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n",
			want: `document 1 (Pod shop/web): apiVersion: "apps/v1" is not supported for kind Pod (use v1)`,
		},
		{
			name: "missing apiVersion",
			in:   "kind: Namespace\nmetadata:\n  name: shop\n",
			want: `document 1 (Namespace shop): apiVersion: required (use v1)`,
		},
		{
			name: "bad YAML, line counted in the whole file",
			in:   yamlNS + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n    labels: {}\n",
			want: `document 2: invalid YAML: line 12: mapping values are not allowed in this context`,
		},
		{
			name: "bad YAML in the first document",
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n",
			want: `document 1: invalid YAML: line 4: did not find expected ',' or ']'`,
		},
		{
			name: "tab indentation",
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: web\n",
			want: `document 1: invalid YAML: line 4: found character that cannot start any token (indent with spaces, not tabs)`,
		},
		{
			name: "duplicate YAML key",
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  name: db\n",
			want: `document 1: invalid YAML: line 5: key "name" already set in map`,
		},
		{
			name: "YAML list instead of documents",
			in:   "- " + strings.ReplaceAll(strings.TrimSuffix(yamlNS, "\n"), "\n", "\n  ") + "\n",
			want: `document 1: expected an object with apiVersion and kind, got a list (separate documents with ---)`,
		},
		{
			name: "scalar document",
			in:   yamlNS + "---\njust words\n",
			want: `document 2: expected an object with apiVersion and kind, got a string`,
		},
		{
			name: "bad JSON",
			in:   "[\n" + nsTeamA + ",\n" + `{"apiVersion": "v1", "kind": "Pod" "metadata": {}}` + "\n]",
			want: `document 1: invalid JSON: line 3, column 36: invalid character '"' after object key:value pair`,
		},
		{
			name: "truncated JSON",
			in:   `{"apiVersion": "v1", "kind": "Pod"`,
			want: `document 1: invalid JSON: line 1, column 34: unexpected end of input`,
		},
		{
			name: "JSON array element not an object",
			in:   "[" + nsTeamA + ", 42]",
			want: `document 2: expected an object with apiVersion and kind, got a number`,
		},
		{
			name: "JSON array element null",
			in:   "[" + nsTeamA + ", null]",
			want: `document 2: expected an object with apiVersion and kind, got null`,
		},
		{
			name: "duplicate JSON field",
			in:   `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","labels":{"x":"1"},"labels":{"y":"2"}}}`,
			want: `document 1 (Namespace a): metadata.labels: duplicate field`,
		},
		{
			name: "missing name",
			in:   yamlNS + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  namespace: team-a\n  labels:\n    app: web\n",
			want: `document 2 (Pod): metadata.name: required`,
		},
		{
			name: "generateName",
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: web-\n",
			want: `document 1 (Pod): metadata.name: required (netloom does not support generateName)`,
		},
		{
			name: "no metadata at all",
			in:   "apiVersion: v1\nkind: Namespace\n",
			want: `document 1 (Namespace): metadata.name: required`,
		},
		{
			name: "bad pod name",
			in:   pod("  name: Web_1\n", port80),
			want: `document 1 (Pod default/Web_1): metadata.name: invalid name "Web_1": ` + msgSubdomain,
		},
		{
			name: "namespace name must be a label, not a subdomain",
			in:   "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team.a\n",
			want: `document 1 (Namespace team.a): metadata.name: invalid name "team.a": must not contain dots`,
		},
		{
			name: "bad namespace",
			in:   pod(web+"  namespace: Team_A\n", port80),
			want: `document 1 (Pod Team_A/web): metadata.namespace: invalid namespace "Team_A": ` + msgLabel,
		},
		{
			name: "bad label key",
			in:   pod(web+"  labels:\n    a b: x\n", port80),
			want: `document 1 (Pod default/web): metadata.labels: invalid label key "a b": ` + msgKeyName,
		},
		{
			name: "bad label key prefix",
			in:   pod(web+"  labels:\n    Example.com/app: x\n", port80),
			want: `document 1 (Pod default/web): metadata.labels: invalid label key "Example.com/app": prefix part ` + msgSubdomain,
		},
		{
			name: "bad label value",
			in:   yamlNS + "---\n" + pod(web+"  labels:\n    app: a b\n", port80),
			want: `document 2 (Pod default/web): metadata.labels: invalid label value "a b": ` + msgValue,
		},
		{
			name: "label value too long",
			in:   pod(web+"  labels:\n    app: "+strings.Repeat("a", 64)+"\n", port80),
			want: `document 1 (Pod default/web): metadata.labels: invalid label value "` + strings.Repeat("a", 64) + `": must be no more than 63 bytes`,
		},
		{
			name: "label value of the wrong type",
			in:   pod(web+"  labels:\n    replicas: 3\n", port80),
			want: `document 1 (Pod default/web): metadata.labels[replicas]: expected string, got number (quote the value)`,
		},
		{
			name: "bad annotation key",
			in:   "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n    bad key: x\n",
			want: `document 1 (Namespace x): metadata.annotations: invalid annotation key "bad key": ` + msgKeyName,
		},
		{
			name: "bad port name",
			in:   pod(web, ports("    - name: http_x\n      containerPort: 80\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].name: invalid port name "http_x": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)`,
		},
		{
			name: "port name too long",
			in:   pod(web, ports("    - name: abcdefghijklmnop\n      containerPort: 80\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].name: invalid port name "abcdefghijklmnop": must be no more than 15 characters`,
		},
		{
			name: "duplicate port name",
			in:   pod(web, ports("    - name: http\n      containerPort: 80\n    - name: http\n      containerPort: 81\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[1].name: duplicate port name "http" (also spec.containers[0].ports[0])`,
		},
		{
			name: "bad port number",
			in:   pod(web, ports("    - containerPort: 80\n    - containerPort: 70000\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[1].containerPort: invalid port 70000: must be between 1 and 65535, inclusive`,
		},
		{
			name: "missing port number",
			in:   pod(web, ports("    - name: http\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].containerPort: invalid port 0: must be between 1 and 65535, inclusive`,
		},
		{
			name: "bad host port",
			in:   pod(web, ports("    - containerPort: 80\n      hostPort: -1\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].hostPort: invalid port -1: must be between 1 and 65535, inclusive`,
		},
		{
			name: "port number of the wrong type",
			in:   pod(web, ports("    - containerPort: eighty\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].containerPort: expected integer, got string`,
		},
		{
			name: "bad protocol",
			in:   pod(web, ports("    - containerPort: 80\n      protocol: ICMP\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].protocol: unsupported protocol "ICMP": must be TCP, UDP or SCTP`,
		},
		{
			name: "protocol is case sensitive",
			in:   pod(web, ports("    - containerPort: 80\n      protocol: tcp\n")),
			want: `document 1 (Pod default/web): spec.containers[0].ports[0].protocol: unsupported protocol "tcp": must be TCP, UDP or SCTP`,
		},
		{
			name: "bad port in an init container",
			in:   pod(web, "  initContainers:\n  - name: i\n    ports:\n    - containerPort: 0\n"),
			want: `document 1 (Pod default/web): spec.initContainers[0].ports[0].containerPort: invalid port 0: must be between 1 and 65535, inclusive`,
		},
		{
			name: "containers of the wrong type",
			in:   pod(web, "  containers:\n    name: web\n"),
			want: `document 1 (Pod default/web): spec.containers: expected list, got object`,
		},
		{
			name: "probe port of the wrong type",
			in:   pod(web, "  containers:\n  - name: a\n  - name: b\n    livenessProbe:\n      tcpSocket:\n        port: true\n"),
			want: `document 1 (Pod default/web): spec.containers[1].livenessProbe.tcpSocket.port: expected integer, got boolean`,
		},
		{
			name: "bad resource quantity",
			in:   pod(web, "  containers:\n  - name: a\n    resources:\n      requests:\n        cpu: lots\n"),
			want: `document 1 (Pod default/web): spec.containers[0].resources.requests[cpu]: invalid quantity "lots" (use a number with an optional suffix, e.g. 250m, 2, 128Mi, 1Gi)`,
		},
		{
			name: "duplicate object",
			in:   yamlWeb + "---\n" + yamlNS + "---\n" + yamlWeb,
			want: `document 3 (Pod team-a/web): duplicate of document 1 (same kind, namespace and name)`,
		},
		{
			name: "duplicate with the default namespace spelled out",
			in:   yamlDB + "---\n" + strings.Replace(yamlDB, "  name: db\n", "  name: db\n  namespace: default\n", 1),
			want: `document 2 (Pod default/db): duplicate of document 1 (same kind, namespace and name)`,
		},
		{
			name: "duplicate inside a List",
			in:   `{"apiVersion":"v1","kind":"List","items":[` + nsTeamA + "," + podWeb + "," + nsTeamA + `]}`,
			want: `document 1, item 3 (Namespace team-a): duplicate of document 1, item 1 (same kind, namespace and name)`,
		},
		{
			name: "bad item in a List",
			in:   yamlNS + "---\n" + `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"a b"}}}]}`,
			want: `document 2, item 1 (Pod default/web): metadata.labels: invalid label value "a b": ` + msgValue,
		},
		{
			name: "List inside a List",
			in:   `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"List","items":[]}]}`,
			want: `document 1, item 1 (List): a List inside a List is not supported`,
		},
		{
			name: "List items not a list",
			in:   "apiVersion: v1\nkind: List\nitems: 3\n",
			want: `document 1 (List): items: expected a list, got a number`,
		},
		{
			name: "empty documents are not counted",
			in:   "---\n# a comment\n---\n" + yamlNS + "---\n\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n",
			want: `document 2: unknown kind "Ingress" (netloom accepts Namespace, Pod, NetworkPolicy, Service, AddressPool)`,
		},
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

func TestDocumentErrorFields(t *testing.T) {
	in := yamlNS + "---\n\n" + pod("  name: web\n  namespace: shop\n", ports("    - containerPort: 0\n"))
	_, err := Parse([]byte(in))
	var de *DocumentError
	if !errors.As(err, &de) {
		t.Fatalf("Parse error = %v, want *DocumentError", err)
	}
	wantErr := "spec.containers[0].ports[0].containerPort: invalid port 0: must be between 1 and 65535, inclusive"
	want := DocumentError{Doc: 2, Line: 8, Kind: "Pod", Namespace: "shop", Name: "web"}
	gotDE := *de
	gotDE.Err = nil
	if diff := cmp.Diff(want, gotDE); diff != "" {
		t.Errorf("DocumentError (-want +got):\n%s", diff)
	}
	if de.Err == nil || de.Err.Error() != wantErr {
		t.Errorf("DocumentError.Err = %v, want %q", de.Err, wantErr)
	}
}

// A realistic Pod as kubectl prints it loads with its spec unchanged; only
// the metadata netloom keeps survives, and the port protocol is defaulted.
func TestRealisticPod(t *testing.T) {
	data, err := os.ReadFile("testdata/pod-kubectl.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("Parse returned %d objects, want 1", len(objs))
	}
	o := objs[0]
	if diff := cmp.Diff(got{"Pod", "shop", "web-7d4b9c-x2x9k", ""}, got{o.Kind, o.Namespace, o.Name, ""}); diff != "" {
		t.Errorf("object (-want +got):\n%s", diff)
	}

	var orig corev1.Pod
	if err := yaml.Unmarshal(data, &orig); err != nil {
		t.Fatal(err)
	}
	wantSpec := orig.Spec.DeepCopy()
	wantSpec.Containers[0].Ports[1].Protocol = corev1.ProtocolTCP // defaulted

	p, err := DecodePod(o.JSON)
	if err != nil {
		t.Fatalf("DecodePod: %v", err)
	}
	quantities := cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })
	if diff := cmp.Diff(*wantSpec, p.Spec, quantities); diff != "" {
		t.Errorf("spec after round trip (-want +got):\n%s", diff)
	}
	// Of the status only the Ready condition is kept (it decides whether
	// the pod's endpoints take new connections).
	wantStatus := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if diff := cmp.Diff(wantStatus, p.Status); diff != "" {
		t.Errorf("status kept (-want +got):\n%s", diff)
	}
	if ready, terminating := PodConditions(p); !ready || terminating {
		t.Errorf("PodConditions = %v, %v; want ready, not terminating", ready, terminating)
	}

	var top struct {
		Metadata map[string]any `json:"metadata"`
		Status   any            `json:"status"`
	}
	if err := json.Unmarshal(o.JSON, &top); err != nil {
		t.Fatal(err)
	}
	wantMeta := map[string]any{
		"name":        "web-7d4b9c-x2x9k",
		"namespace":   "shop",
		"labels":      map[string]any{"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c", "tier": "frontend"},
		"annotations": map[string]any{"prometheus.io/scrape": "true"},
	}
	if diff := cmp.Diff(wantMeta, top.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}, top.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	// Parsing the normalized form again gives the same bytes.
	again, err := Parse(o.JSON)
	if err != nil {
		t.Fatalf("Parse(normalized): %v", err)
	}
	if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
		t.Errorf("normalized form not stable (-first +second):\n%s", diff)
	}
}

func TestFromJSON(t *testing.T) {
	objs, err := FromJSON([]json.RawMessage{json.RawMessage(nsTeamA), json.RawMessage(podWeb)})
	if err != nil {
		t.Fatalf("FromJSON: %v", err)
	}
	if diff := cmp.Diff([]got{wantNS, wantWeb}, summarize(objs)); diff != "" {
		t.Errorf("FromJSON (-want +got):\n%s", diff)
	}
	_, err = FromJSON([]json.RawMessage{json.RawMessage(podWeb), json.RawMessage(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","namespace":"-"}}`)})
	want := `document 2 (Pod -/x): metadata.namespace: invalid namespace "-": ` + msgLabel
	if err == nil || err.Error() != want {
		t.Errorf("FromJSON error = %v, want %q", err, want)
	}
}

func TestDecode(t *testing.T) {
	p, err := DecodePod(json.RawMessage(podWeb))
	if err != nil {
		t.Fatalf("DecodePod: %v", err)
	}
	wantPort := corev1.ContainerPort{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}
	if diff := cmp.Diff([]any{"team-a", "web", "web", wantPort}, []any{p.Namespace, p.Name, p.Labels["app"], p.Spec.Containers[0].Ports[0]}); diff != "" {
		t.Errorf("DecodePod (-want +got):\n%s", diff)
	}
	if _, err := DecodePod(json.RawMessage(nsTeamA)); err == nil || err.Error() != `decode Pod: object is of kind "Namespace"` {
		t.Errorf("DecodePod(namespace) error = %v", err)
	}
	ns, err := DecodeNamespace(json.RawMessage(nsTeamA))
	if err != nil {
		t.Fatalf("DecodeNamespace: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"env": "prod"}, ns.Labels); diff != "" || ns.Name != "team-a" {
		t.Errorf("DecodeNamespace: name %q, labels (-want +got):\n%s", ns.Name, diff)
	}
	if _, err := DecodeNamespace(json.RawMessage(`{"kind":"Namespace","metadata":{"name":7}}`)); err == nil || err.Error() != `decode Namespace: metadata.name: expected string, got number (quote the value)` {
		t.Errorf("DecodeNamespace(bad) error = %v", err)
	}
}

func TestNormalizeKind(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "pods", want: "Pod"},
		{in: "pod", want: "Pod"},
		{in: "po", want: "Pod"},
		{in: "Pod", want: "Pod"},
		{in: "PODS", want: "Pod"},
		{in: "namespaces", want: "Namespace"},
		{in: "namespace", want: "Namespace"},
		{in: "ns", want: "Namespace"},
		{in: "NameSpace", want: "Namespace"},
		{in: "deployments", err: `unknown kind "deployments" (netloom knows: namespaces, pods, networkpolicies, services, addresspools)`},
		{in: "", err: `unknown kind "" (netloom knows: namespaces, pods, networkpolicies, services, addresspools)`},
	}
	for _, tt := range tests {
		k, err := NormalizeKind(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if k != tt.want || gotErr != tt.err {
			t.Errorf("NormalizeKind(%q) = %q, %q; want %q, %q", tt.in, k, gotErr, tt.want, tt.err)
		}
	}
}

func TestKinds(t *testing.T) {
	want := []KindInfo{
		{Kind: "Namespace", Plural: "namespaces", ShortNames: []string{"ns"}, APIVersions: []string{"v1"}},
		{Kind: "Pod", Plural: "pods", ShortNames: []string{"po"}, APIVersions: []string{"v1"}, Namespaced: true},
		{Kind: "NetworkPolicy", Plural: "networkpolicies", ShortNames: []string{"netpol"}, APIVersions: []string{"networking.k8s.io/v1"}, Namespaced: true},
		{Kind: "Service", Plural: "services", ShortNames: []string{"svc"}, APIVersions: []string{"v1"}, Namespaced: true},
		{Kind: "AddressPool", Plural: "addresspools", ShortNames: []string{"pool", "pools"}, APIVersions: []string{"netloom.io/v1alpha1"}},
	}
	if diff := cmp.Diff(want, Kinds()); diff != "" {
		t.Errorf("Kinds (-want +got):\n%s", diff)
	}
	if k, ok := Lookup("Pod"); !ok || !k.Namespaced {
		t.Errorf("Lookup(Pod) = %+v, %v", k, ok)
	}
	if _, ok := Lookup("pods"); ok {
		t.Errorf("Lookup(pods) found a kind; Lookup takes canonical names only")
	}
}
