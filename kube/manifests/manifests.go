// Package manifests holds the Kubernetes objects a cluster admin applies
// once for netloom's Kubernetes mode: the AddressPool
// CustomResourceDefinition and the ServiceAccount, ClusterRole and
// ClusterRoleBinding the agents use. The agents run under systemd on the
// hosts, not in pods, and reach the API server with a kubeconfig for the
// ServiceAccount (see KubeconfigHowTo).
//
//	netloom k8s manifests | kubectl apply -f -
//
// The names here (group, version, resource, ServiceAccount) are the ones
// the agent's Kubernetes source uses.
package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// netloom's API group and the AddressPool kind.
const (
	Group      = "netloom.io"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version // "netloom.io/v1alpha1"

	AddressPoolKind     = "AddressPool"
	AddressPoolListKind = "AddressPoolList"
	AddressPoolResource = "addresspools" // the plural
	AddressPoolSingular = "addresspool"
	// AddressPoolCRDName is the CustomResourceDefinition's name
	// (plural.group).
	AddressPoolCRDName = AddressPoolResource + "." + Group
)

// The identity the agents use, and its RBAC objects.
const (
	ServiceAccountName      = "netloom"
	ServiceAccountNamespace = "kube-system"
	ClusterRoleName         = "netloom"
	ClusterRoleBindingName  = "netloom"
)

var (
	// GroupVersion is netloom.io/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: Group, Version: Version}
	// AddressPoolGVR is what a dynamic client or an informer asks for.
	AddressPoolGVR = GroupVersion.WithResource(AddressPoolResource)
	// AddressPoolGVK is the kind of one AddressPool.
	AddressPoolGVK = GroupVersion.WithKind(AddressPoolKind)
)

// labels are on every object, so that `kubectl get -l` finds them all.
func labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "netloom"}
}

// Objects returns, in the order to apply them, the
// CustomResourceDefinition, the ServiceAccount, the ClusterRole and the
// ClusterRoleBinding. Each call returns new values.
func Objects() []runtime.Object {
	return []runtime.Object{AddressPoolCRD(), ServiceAccount(), ClusterRole(), ClusterRoleBinding()}
}

// YAML renders Objects as one multi-document YAML stream ("---" between
// documents), apiVersion and kind set, keys sorted: the same bytes on every
// call. A CustomResourceDefinition's empty status is left out.
func YAML() ([]byte, error) {
	var out bytes.Buffer
	for i, o := range Objects() {
		doc, err := render(o)
		if err != nil {
			gvk := o.GetObjectKind().GroupVersionKind()
			return nil, fmt.Errorf("render %s: %w", gvk.Kind, err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(doc)
	}
	return out.Bytes(), nil
}

// render marshals one object to YAML, dropping a status that only holds
// zero values (the CRD's: apply ignores it, and it is noise to read).
func render(o runtime.Object) ([]byte, error) {
	j, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	if crd, ok := o.(*apiextensionsv1.CustomResourceDefinition); ok && reflect.ValueOf(crd.Status).IsZero() {
		delete(m, "status")
	}
	return yaml.Marshal(m)
}

// ServiceAccount is kube-system/netloom, the identity of every agent.
func ServiceAccount() *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{}
	sa.APIVersion, sa.Kind = "v1", "ServiceAccount"
	sa.Name, sa.Namespace, sa.Labels = ServiceAccountName, ServiceAccountNamespace, labels()
	return sa
}

// ClusterRoleBinding binds ClusterRole netloom to the ServiceAccount.
func ClusterRoleBinding() *rbacv1.ClusterRoleBinding {
	b := &rbacv1.ClusterRoleBinding{
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ClusterRoleName},
		Subjects: []rbacv1.Subject{{
			Kind: rbacv1.ServiceAccountKind, Name: ServiceAccountName, Namespace: ServiceAccountNamespace,
		}},
	}
	b.APIVersion, b.Kind = rbacv1.SchemeGroupVersion.String(), "ClusterRoleBinding"
	b.Name, b.Labels = ClusterRoleBindingName, labels()
	return b
}

// ClusterRole is what the agents may do, and nothing more: read the objects
// they derive the network from, write the status of Services (VIPs) and of
// Nodes (conditions), and record events.
func ClusterRole() *rbacv1.ClusterRole {
	read := []string{"get", "list", "watch"}
	r := &rbacv1.ClusterRole{
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "nodes", "pods", "services"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies", "servicecidrs"}, Verbs: read},
			{APIGroups: []string{Group}, Resources: []string{AddressPoolResource}, Verbs: read},
			// status.loadBalancer.ingress of LoadBalancer services.
			{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"patch"}},
			// Node conditions (e.g. NetworkUnavailable).
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
			// Events, through either API (client-go's recorders use both).
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
	r.APIVersion, r.Kind = rbacv1.SchemeGroupVersion.String(), "ClusterRole"
	r.Name, r.Labels = ClusterRoleName, labels()
	return r
}
