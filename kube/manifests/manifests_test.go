package manifests

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/mesh/objects"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got), run go test -update if intended:\n%s", path, diff)
	}
}

// The stream is what `netloom k8s manifests` prints; reviewers read the
// golden file.
func TestYAMLGolden(t *testing.T) {
	got, err := YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "manifests.yaml", got)
	again, err := YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, again) {
		t.Error("YAML() differs between two calls")
	}
}

// splitDocs splits a YAML stream at its "---" lines.
func splitDocs(b []byte) []string {
	var docs []string
	for _, d := range strings.Split("\n"+string(b), "\n---\n") {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, strings.TrimPrefix(d, "\n"))
		}
	}
	return docs
}

// Every document decodes, strictly, into the typed struct of its kind and
// equals the object it was made from.
func TestYAMLRoundTrip(t *testing.T) {
	b, err := YAML()
	if err != nil {
		t.Fatal(err)
	}
	docs := splitDocs(b)
	objs := Objects()
	if len(docs) != len(objs) {
		t.Fatalf("YAML has %d documents, Objects %d", len(docs), len(objs))
	}
	wantKinds := []struct{ apiVersion, kind string }{
		{"apiextensions.k8s.io/v1", "CustomResourceDefinition"},
		{"v1", "ServiceAccount"},
		{"rbac.authorization.k8s.io/v1", "ClusterRole"},
		{"rbac.authorization.k8s.io/v1", "ClusterRoleBinding"},
	}
	for i, doc := range docs {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i+1, err)
		}
		if meta.APIVersion != wantKinds[i].apiVersion || meta.Kind != wantKinds[i].kind {
			t.Errorf("document %d is %s %s, want %s %s", i+1, meta.APIVersion, meta.Kind, wantKinds[i].apiVersion, wantKinds[i].kind)
		}
		var got runtime.Object
		switch meta.Kind {
		case "CustomResourceDefinition":
			got = &apiextensionsv1.CustomResourceDefinition{}
		case "ServiceAccount":
			got = &corev1.ServiceAccount{}
		case "ClusterRole":
			got = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			got = &rbacv1.ClusterRoleBinding{}
		default:
			t.Fatalf("document %d: unexpected kind %q", i+1, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), got); err != nil {
			t.Fatalf("document %d (%s): %v", i+1, meta.Kind, err)
		}
		if reflect.TypeOf(got) != reflect.TypeOf(objs[i]) {
			t.Fatalf("document %d decodes to %T, Objects()[%d] is %T", i+1, got, i, objs[i])
		}
		if diff := cmp.Diff(objs[i], got); diff != "" {
			t.Errorf("document %d (%s) does not round-trip (-object +decoded):\n%s", i+1, meta.Kind, diff)
		}
	}
}

// The ClusterRole grants exactly this, as (group, resource, verb). A verb
// added, removed or moved fails here.
func TestClusterRoleRules(t *testing.T) {
	want := []string{
		"/events create", "/events patch",
		"/namespaces get", "/namespaces list", "/namespaces watch",
		"/nodes get", "/nodes list", "/nodes watch",
		"/nodes/status patch",
		"/pods get", "/pods list", "/pods watch",
		"/services get", "/services list", "/services watch",
		"/services/status patch",
		"discovery.k8s.io/endpointslices get", "discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch",
		"events.k8s.io/events create", "events.k8s.io/events patch",
		"netloom.io/addresspools get", "netloom.io/addresspools list", "netloom.io/addresspools watch",
		"networking.k8s.io/networkpolicies get", "networking.k8s.io/networkpolicies list", "networking.k8s.io/networkpolicies watch",
		"networking.k8s.io/servicecidrs get", "networking.k8s.io/servicecidrs list", "networking.k8s.io/servicecidrs watch",
	}
	var got []string
	for i, r := range ClusterRole().Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %d has resourceNames %v or nonResourceURLs %v; want neither", i, r.ResourceNames, r.NonResourceURLs)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("rule %d has a wildcard: %+v", i, r)
					}
					got = append(got, g+"/"+res+" "+v)
				}
			}
		}
	}
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ClusterRole grants (-want +got):\n%s", diff)
	}
}

func TestBinding(t *testing.T) {
	b := ClusterRoleBinding()
	if b.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ClusterRole().Name}) {
		t.Errorf("roleRef = %+v, want ClusterRole %s", b.RoleRef, ClusterRole().Name)
	}
	sa := ServiceAccount()
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}
	if diff := cmp.Diff(want, b.Subjects); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
	if sa.Name != "netloom" || sa.Namespace != "kube-system" {
		t.Errorf("ServiceAccount is %s/%s, want kube-system/netloom", sa.Namespace, sa.Name)
	}
}

// The CRD's names are the ones netloom's own kind table uses, so that
// `kubectl get pools` and `netloom get pools` mean the same.
func TestNamesMatchObjects(t *testing.T) {
	info, ok := objects.Lookup(AddressPoolKind)
	if !ok {
		t.Fatalf("mesh/objects has no kind %s", AddressPoolKind)
	}
	crd := AddressPoolCRD()
	n := crd.Spec.Names
	if info.Plural != n.Plural || info.Plural != AddressPoolGVR.Resource {
		t.Errorf("plural: objects %q, CRD %q, GVR %q", info.Plural, n.Plural, AddressPoolGVR.Resource)
	}
	if diff := cmp.Diff(info.ShortNames, n.ShortNames); diff != "" {
		t.Errorf("short names (-objects +CRD):\n%s", diff)
	}
	if info.Namespaced != (crd.Spec.Scope == apiextensionsv1.NamespaceScoped) {
		t.Errorf("objects says namespaced=%v, CRD scope is %s", info.Namespaced, crd.Spec.Scope)
	}
	if info.APIVersions[0] != APIVersion || objects.AddressPoolAPIVersion != APIVersion || AddressPoolGVK.GroupVersion().String() != APIVersion {
		t.Errorf("apiVersion: objects %q (%q), here %q", info.APIVersions[0], objects.AddressPoolAPIVersion, APIVersion)
	}
	if crd.Name != AddressPoolGVR.GroupResource().String() {
		t.Errorf("CRD name %q, want %q", crd.Name, AddressPoolGVR.GroupResource().String())
	}
}
