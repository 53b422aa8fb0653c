package objects

import (
	"bytes"
	"encoding/json"
	"net/netip"
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

func TestPodTable(t *testing.T) {
	raws := mustParse(t, yamlWeb+"---\n"+yamlDB+"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: api\n  namespace: team-a\n  labels:\n    tier: back\n    app: api\n")
	where := map[string]PodPlace{
		"team-a/web": {IP: netip.MustParseAddr("10.244.3.17"), Node: "edge-3"},
		"default/db": {Node: "edge-1"}, // no address yet
	}
	rows, err := PodTable(raws, where)
	if err != nil {
		t.Fatalf("PodTable: %v", err)
	}
	want := [][]string{
		{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"},
		{"default", "db", "<none>", "edge-1", "<none>"},
		{"team-a", "api", "<none>", "<none>", "app=api,tier=back"},
		{"team-a", "web", "10.244.3.17", "edge-3", "app=web"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("PodTable (-want +got):\n%s", diff)
	}

	var buf bytes.Buffer
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	wantText := "" +
		"NAMESPACE   NAME   IP            NODE     LABELS\n" +
		"default     db     <none>        edge-1   <none>\n" +
		"team-a      api    <none>        <none>   app=api,tier=back\n" +
		"team-a      web    10.244.3.17   edge-3   app=web\n"
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

	rows, err = Table("Pod", mustParse(t, yamlWeb))
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want = [][]string{{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"}, {"team-a", "web", "<none>", "<none>", "app=web"}}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(Pod) (-want +got):\n%s", diff)
	}

	rows, err = Table("Pod", nil)
	if err != nil || len(rows) != 1 {
		t.Errorf("Table(Pod, nil) = %v, %v; want the header only", rows, err)
	}
	if _, err := Table("Deployment", nil); err == nil || err.Error() != `table: unknown kind "Deployment" (netloom knows: Namespace, Pod, NetworkPolicy, Service, AddressPool)` {
		t.Errorf("Table(Deployment) error = %v", err)
	}
	if _, err := Table("Pod", []json.RawMessage{json.RawMessage(nsTeamA)}); err == nil || err.Error() != `pod table: decode Pod: object is of kind "Namespace"` {
		t.Errorf("Table(Pod, namespace) error = %v", err)
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
