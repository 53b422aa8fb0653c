package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/node/api"
)

// podList is what the agent sends for `netloom get pods`: a Pod applied
// as a manifest and attached, and a pod attached by CNI that was never
// applied, each with the document PodView makes.
func podList(t *testing.T) []api.Object {
	t.Helper()
	stored := json.RawMessage(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`)
	web, err := objects.PodView(stored, "shop", "web", "10.244.3.17", "edge-3")
	if err != nil {
		t.Fatal(err)
	}
	cni, err := objects.PodView(nil, "default", "sandbox-1", "10.244.1.4", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	return []api.Object{
		{Kind: "Pod", Namespace: "default", Name: "sandbox-1", Object: cni},
		{Kind: "Pod", Namespace: "shop", Name: "web", Object: web},
	}
}

// row is what a test compares of an object in the table and in json.
type row struct{ Namespace, Name, IP, Node string }

func TestWriteObjectsTableAndJSONAgree(t *testing.T) {
	list := podList(t)

	var table, errw strings.Builder
	if err := writeObjects(&table, &errw, "Pod", list, "", false); err != nil {
		t.Fatalf("table: %v", err)
	}
	wantTable := "" +
		"NAMESPACE   NAME        IP            NODE     LABELS\n" +
		"default     sandbox-1   10.244.1.4    edge-1   <none>\n" +
		"shop        web         10.244.3.17   edge-3   app=web\n"
	if diff := cmp.Diff(wantTable, table.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	var fromTable []row
	for _, l := range strings.Split(strings.TrimSpace(table.String()), "\n")[1:] {
		f := strings.Fields(l)
		fromTable = append(fromTable, row{f[0], f[1], f[2], f[3]})
	}

	var js strings.Builder
	if err := writeObjects(&js, &errw, "Pod", list, "json", false); err != nil {
		t.Fatalf("json: %v", err)
	}
	var l struct {
		APIVersion, Kind string
		Items            []struct {
			Metadata struct{ Namespace, Name string }
			Spec     struct{ NodeName string }
			Status   struct{ PodIP string }
		}
	}
	if err := json.Unmarshal([]byte(js.String()), &l); err != nil {
		t.Fatalf("json: %v: %s", err, js.String())
	}
	if l.APIVersion != "v1" || l.Kind != "List" {
		t.Errorf("json is a %s %s, want a v1 List", l.APIVersion, l.Kind)
	}
	var fromJSON []row
	for _, it := range l.Items {
		fromJSON = append(fromJSON, row{it.Metadata.Namespace, it.Metadata.Name, it.Status.PodIP, it.Spec.NodeName})
	}
	if diff := cmp.Diff(fromTable, fromJSON); diff != "" {
		t.Errorf("table and json list other pods (-table +json):\n%s", diff)
	}

	// yaml: the same documents, which apply reads back.
	var y strings.Builder
	if err := writeObjects(&y, &errw, "Pod", list, "yaml", false); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	objs, err := objects.Parse([]byte(y.String()))
	if err != nil {
		t.Fatalf("parse yaml: %v: %s", err, y.String())
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Namespace+"/"+o.Name)
	}
	if diff := cmp.Diff([]string{"default/sandbox-1", "shop/web"}, names); diff != "" {
		t.Errorf("yaml lists (-want +got):\n%s", diff)
	}
	if errw.Len() != 0 {
		t.Errorf("stderr: %q, want nothing", errw.String())
	}
}

// TestWriteObjectsEveryKind: for the document of every kind, the table and
// the json list name the same objects.
func TestWriteObjectsEveryKind(t *testing.T) {
	docs := map[string]string{
		"Namespace":     `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}`,
		"NetworkPolicy": `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"shop"},"spec":{"podSelector":{}}}`,
		"Service":       `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},"spec":{"ports":[{"port":80}]}}`,
		"AddressPool":   `{"apiVersion":"netloom.io/v1alpha1","kind":"AddressPool","metadata":{"name":"lan"},"spec":{"addresses":["192.168.1.240/28"]}}`,
	}
	views := map[string]func(json.RawMessage) (json.RawMessage, error){
		"NetworkPolicy": func(raw json.RawMessage) (json.RawMessage, error) {
			return objects.PolicyView(raw, []string{"shop/web"}, nil)
		},
		"Service": func(raw json.RawMessage) (json.RawMessage, error) {
			return objects.ServiceView(raw, objects.ServicePlace{ClusterIP: "10.96.0.10"})
		},
	}
	for _, k := range objects.Kinds() {
		var list []api.Object
		if k.Kind == "Pod" {
			list = podList(t)
		} else {
			doc := json.RawMessage(docs[k.Kind])
			if v := views[k.Kind]; v != nil {
				var err error
				if doc, err = v(doc); err != nil {
					t.Fatalf("%s: %v", k.Kind, err)
				}
			}
			list = []api.Object{{Kind: k.Kind, Object: doc}}
		}
		var table, js, errw strings.Builder
		if err := writeObjects(&table, &errw, k.Kind, list, "", false); err != nil {
			t.Errorf("%s: table: %v", k.Kind, err)
			continue
		}
		if err := writeObjects(&js, &errw, k.Kind, list, "json", false); err != nil {
			t.Errorf("%s: json: %v", k.Kind, err)
			continue
		}
		var fromTable []string
		for _, l := range strings.Split(strings.TrimSpace(table.String()), "\n")[1:] {
			f := strings.Fields(l)
			if k.Namespaced {
				fromTable = append(fromTable, f[0]+"/"+f[1])
			} else {
				fromTable = append(fromTable, f[0])
			}
		}
		var l struct {
			Items []struct {
				Metadata struct{ Namespace, Name string }
			}
		}
		if err := json.Unmarshal([]byte(js.String()), &l); err != nil {
			t.Errorf("%s: json: %v", k.Kind, err)
			continue
		}
		var fromJSON []string
		for _, it := range l.Items {
			fromJSON = append(fromJSON, strings.TrimPrefix(it.Metadata.Namespace+"/"+it.Metadata.Name, "/"))
		}
		if len(fromTable) == 0 || !cmp.Equal(fromTable, fromJSON) {
			t.Errorf("%s: the table lists %q, json %q; want the same, not none\n%s", k.Kind, fromTable, fromJSON, table.String())
		}
	}
}

func TestWriteObjectsNamedAndEmpty(t *testing.T) {
	list := podList(t)[1:]

	// One object asked for by name prints alone.
	var out, errw strings.Builder
	if err := writeObjects(&out, &errw, "Pod", list, "json", true); err != nil {
		t.Fatal(err)
	}
	var one struct{ Kind string }
	if err := json.Unmarshal([]byte(out.String()), &one); err != nil || one.Kind != "Pod" {
		t.Errorf("get pods web -o json: kind %q (%v), want the Pod alone", one.Kind, err)
	}

	// Nothing: an empty List, or a line on stderr under a table.
	out.Reset()
	if err := writeObjects(&out, &errw, "Pod", nil, "json", true); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(out.String()), ""); got != `{"apiVersion":"v1","kind":"List","items":[]}` {
		t.Errorf("json of nothing = %s", out.String())
	}
	out.Reset()
	if err := writeObjects(&out, &errw, "NetworkPolicy", nil, "", false); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || errw.String() != "no networkpolicies found\n" {
		t.Errorf("table of nothing: stdout %q, stderr %q", out.String(), errw.String())
	}

	// An object without a document (an older agent) is left out of both,
	// and stderr says so.
	errw.Reset()
	bare := append(list, api.Object{Kind: "Pod", Namespace: "default", Name: "old", IP: "10.244.1.9"})
	for _, output := range []string{"", "json"} {
		out.Reset()
		if err := writeObjects(&out, &errw, "Pod", bare, output, false); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "old") {
			t.Errorf("-o %q lists the pod without a document:\n%s", output, out.String())
		}
	}
	want := "left out (the agent sent no document; restart it to run this version of netloom): pod default/old\n"
	if errw.String() != want+want {
		t.Errorf("stderr %q, want %q twice", errw.String(), want)
	}

	if err := writeObjects(&out, &errw, "Pod", list, "wide", false); err == nil || err.Error() != `--output "wide": use json or yaml` {
		t.Errorf("-o wide error = %v", err)
	}
}

func TestGetHelpNamesEveryKind(t *testing.T) {
	app := newApp()
	var out strings.Builder
	app.Writer = &out
	if err := app.Run([]string{"netloom", "get", "--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, k := range objects.Kinds() {
		for _, name := range append([]string{k.Plural, k.Kind}, k.ShortNames...) {
			if !strings.Contains(help, name) {
				t.Errorf("get --help does not name %q (kind %s):\n%s", name, k.Kind, help)
			}
		}
	}
}

// TestPrintStatusSubnet: a subnet the cluster assigned says so, and a node
// waiting for one says it waits rather than reporting a problem.
func TestPrintStatusSubnet(t *testing.T) {
	var b strings.Builder
	printStatus(&b, api.Status{Node: api.NodeStatus{Name: "n1", Subnet: "10.244.1.0/24", SubnetAssigned: true}})
	if !strings.Contains(b.String(), "subnet 10.244.1.0/24 (spec.podCIDR)") {
		t.Errorf("assigned subnet:\n%s", b.String())
	}
	b.Reset()
	printStatus(&b, api.Status{Node: api.NodeStatus{Name: "n1", SubnetErr: "kube-controller-manager has not set spec.podCIDR of Node n1 yet", SubnetWaiting: true}})
	if !strings.Contains(b.String(), "subnet none") || !strings.Contains(b.String(), "waiting: kube-controller-manager") || strings.Contains(b.String(), "problem:") {
		t.Errorf("waiting for a subnet:\n%s", b.String())
	}
	b.Reset()
	printStatus(&b, api.Status{Node: api.NodeStatus{Name: "n1", SubnetErr: "cluster CIDR 10.244.0.0/16 has no free /24 subnet left; retrying"}})
	if !strings.Contains(b.String(), "problem: cluster CIDR") {
		t.Errorf("no subnet, a fault:\n%s", b.String())
	}
}
