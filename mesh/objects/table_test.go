package objects

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t *testing.T, in string) []json.RawMessage {
	t.Helper()
	objs, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var raws []json.RawMessage
	for _, o := range objs {
		raws = append(raws, o.JSON)
	}
	return raws
}

// viewAll returns view of every document, given its "namespace/name", the
// way the agent turns stored documents into those `netloom get` shows.
func viewAll(t *testing.T, raws []json.RawMessage, view func(key string, raw json.RawMessage) (json.RawMessage, error)) []json.RawMessage {
	t.Helper()
	out := make([]json.RawMessage, len(raws))
	for i, raw := range raws {
		var m struct {
			Metadata struct{ Namespace, Name string } `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("metadata of %s: %v", raw, err)
		}
		v, err := view(m.Metadata.Namespace+"/"+m.Metadata.Name, raw)
		if err != nil {
			t.Fatalf("view of %s: %v", raw, err)
		}
		out[i] = v
	}
	return out
}

func TestPodTable(t *testing.T) {
	raws := mustParse(t, yamlWeb+"---\n"+yamlDB+"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: api\n  namespace: team-a\n  labels:\n    tier: back\n    app: api\n")
	where := map[string][2]string{ // ip, node
		"team-a/web": {"10.244.3.17", "edge-3"},
		"default/db": {"", "edge-1"}, // no address yet
	}
	docs := viewAll(t, raws, func(key string, raw json.RawMessage) (json.RawMessage, error) {
		ns, name, _ := strings.Cut(key, "/")
		return PodView(raw, ns, name, where[key][0], where[key][1])
	})
	// A pod attached by CNI that was never applied has no stored document.
	lonely, err := PodView(nil, "team-b", "lonely", "10.244.7.2", "edge-7")
	if err != nil {
		t.Fatalf("PodView(nil): %v", err)
	}
	rows, err := Table("Pod", append(docs, lonely))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want := [][]string{
		{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"},
		{"default", "db", "<none>", "edge-1", "<none>"},
		{"team-a", "api", "<none>", "<none>", "app=api,tier=back"},
		{"team-a", "web", "10.244.3.17", "edge-3", "app=web"},
		{"team-b", "lonely", "10.244.7.2", "edge-7", "<none>"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Pod) (-want +got):\n%s", diff)
	}

	var buf bytes.Buffer
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	wantText := "" +
		"NAMESPACE   NAME     IP            NODE     LABELS\n" +
		"default     db       <none>        edge-1   <none>\n" +
		"team-a      api      <none>        <none>   app=api,tier=back\n" +
		"team-a      web      10.244.3.17   edge-3   app=web\n" +
		"team-b      lonely   10.244.7.2    edge-7   <none>\n"
	if diff := cmp.Diff(wantText, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
}

func TestTable(t *testing.T) {
	raws := mustParse(t, yamlNS+"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
	rows, err := Table("Namespace", raws)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want := [][]string{{"NAME", "LABELS"}, {"default", "<none>"}, {"team-a", "env=prod"}}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Namespace) (-want +got):\n%s", diff)
	}

	// A stored Pod, not through PodView: no address, no node.
	rows, err = Table("Pod", mustParse(t, yamlWeb))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want = [][]string{{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"}, {"team-a", "web", "<none>", "<none>", "app=web"}}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Pod) (-want +got):\n%s", diff)
	}

	if _, err := Table("Deployment", nil); err == nil || err.Error() != `table: unknown kind "Deployment" (netloom knows: Namespace, Pod, NetworkPolicy, Service, AddressPool)` {
		t.Errorf("Table(Deployment) error = %v", err)
	}
	if _, err := Table("Pod", []json.RawMessage{json.RawMessage(nsTeamA)}); err == nil || err.Error() != `pod table: decode Pod: object is of kind "Namespace"` {
		t.Errorf("Table(Pod, namespace) error = %v", err)
	}
}

// TestTableEveryKind renders one document of every kind, and none: the
// header comes first, NAMESPACE and NAME (or NAME) lead, and a document of
// another kind is an error that names the table.
func TestTableEveryKind(t *testing.T) {
	docs := map[string]string{
		"Namespace":     yamlNS,
		"Pod":           yamlWeb,
		"NetworkPolicy": yamlPolicy,
		"Service":       yamlServiceExported,
		"AddressPool":   pool("  addresses: [192.168.1.240/28]\n"),
	}
	wantHeaders := map[string][]string{
		"Namespace":     {"NAME", "LABELS"},
		"Pod":           {"NAMESPACE", "NAME", "IP", "NODE", "LABELS"},
		"NetworkPolicy": {"NAMESPACE", "NAME", "POD-SELECTOR", "TYPES"},
		"Service":       {"NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS", "ANNOUNCED-BY"},
		"AddressPool":   {"NAME", "ADDRESSES", "AUTO-ASSIGN"},
	}
	for _, k := range Kinds() {
		in, ok := docs[k.Kind]
		if !ok {
			t.Errorf("kind %s: no document in this test", k.Kind)
			continue
		}
		rows, err := Table(k.Kind, mustParse(t, in))
		if err != nil {
			t.Errorf("Table(%s): %v", k.Kind, err)
			continue
		}
		if diff := cmp.Diff(wantHeaders[k.Kind], rows[0]); diff != "" {
			t.Errorf("Table(%s) header (-want +got):\n%s", k.Kind, diff)
		}
		if len(rows) != 2 || len(rows[1]) != len(rows[0]) {
			t.Errorf("Table(%s) = %q, want the header and one row as wide", k.Kind, rows)
		}
		if rows, err := Table(k.Kind, nil); err != nil || len(rows) != 1 {
			t.Errorf("Table(%s, nil) = %q, %v; want the header only", k.Kind, rows, err)
		}
		other := json.RawMessage(podWeb)
		if k.Kind == "Pod" {
			other = json.RawMessage(nsTeamA)
		}
		if _, err := Table(k.Kind, []json.RawMessage{other}); err == nil || !strings.HasPrefix(err.Error(), words(k.Kind)+" table: decode "+k.Kind+": object is of kind") {
			t.Errorf("Table(%s, another kind) error = %v", k.Kind, err)
		}
	}
}

func TestWords(t *testing.T) {
	for in, want := range map[string]string{"Pod": "pod", "NetworkPolicy": "network policy", "AddressPool": "address pool"} {
		if got := words(in); got != want {
			t.Errorf("words(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestToYAMLAndList(t *testing.T) {
	y, err := ToYAML(json.RawMessage(nsTeamA))
	if err != nil {
		t.Fatalf("ToYAML: %v", err)
	}
	want := "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels:\n    env: prod\n  name: team-a\n"
	if diff := cmp.Diff(want, string(y)); diff != "" {
		t.Errorf("ToYAML (-want +got):\n%s", diff)
	}

	// `get -o yaml` output of several objects parses back to the same objects.
	l, err := List([]json.RawMessage{json.RawMessage(nsTeamA), json.RawMessage(podWeb)})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ly, err := ToYAML(l)
	if err != nil {
		t.Fatalf("ToYAML(list): %v", err)
	}
	objs, err := Parse(ly)
	if err != nil {
		t.Fatalf("Parse(%s): %v", ly, err)
	}
	if diff := cmp.Diff([]got{wantNS, wantWeb}, summarize(objs)); diff != "" {
		t.Errorf("round trip through List and YAML (-want +got):\n%s", diff)
	}

	l, err = List(nil)
	if err != nil || string(l) != `{"apiVersion":"v1","kind":"List","items":[]}` {
		t.Errorf("List(nil) = %s, %v", l, err)
	}
}
