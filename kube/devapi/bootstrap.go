package devapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/kube/manifests"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// manifestResources maps the kinds `netloom k8s manifests` prints to their
// resources.
var manifestResources = map[string]schema.GroupVersionResource{
	"CustomResourceDefinition": {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
	"ServiceAccount":           {Version: "v1", Resource: "serviceaccounts"},
	"ClusterRole":              {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding":       {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
}

// Bootstrap prepares the control plane for netloom as a cluster admin
// does: it creates every object of `netloom k8s manifests` from its YAML
// (and waits until the AddressPool CRD is served), a Node object for each
// name (the kubelets would; with Config.AllocateNodeCIDRs it waits until
// each has its spec.podCIDR), and writes to kubeconfig a kubeconfig with a
// token of netloom's ServiceAccount, valid for ttl.
func (s *Server) Bootstrap(ctx context.Context, nodes []string, kubeconfig string, ttl time.Duration) error {
	cfg := s.RESTConfig()
	admin, err := kube.NewAPI(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := ApplyManifests(ctx, dyn); err != nil {
		return err
	}
	for _, n := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if err := admin.Create(ctx, kube.Ref{Resource: "nodes"}, node, nil); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Node %s: %w", n, err)
		}
	}
	if s.cfg.AllocateNodeCIDRs {
		// As after a kubelet registered: the node IPAM controller gives
		// each Node its pod subnet.
		for _, n := range nodes {
			if err := s.waitFor(ctx, s.cm, "assigning Node "+n+" its spec.podCIDR", func(ctx context.Context) error {
				node := &corev1.Node{}
				err := admin.Get(ctx, kube.Ref{Resource: "nodes", Name: n}, node)
				if err == nil && node.Spec.PodCIDR == "" {
					err = errors.New("no spec.podCIDR yet")
				}
				return err
			}); err != nil {
				return err
			}
		}
	}
	token, err := s.ServiceAccountToken(ctx, manifests.ServiceAccountNamespace, manifests.ServiceAccountName, ttl)
	if err != nil {
		return fmt.Errorf("token of the netloom ServiceAccount: %w", err)
	}
	return s.WriteKubeconfig(kubeconfig, manifests.ServiceAccountName, token)
}

// ApplyManifests creates the objects of `netloom k8s manifests` (those
// that exist already are left as they are) and waits until the
// AddressPool CRD is served.
func ApplyManifests(ctx context.Context, dyn dynamic.Interface) error {
	b, err := manifests.YAML()
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("netloom k8s manifests: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		gvr, ok := manifestResources[u.GetKind()]
		if !ok {
			return fmt.Errorf("netloom k8s manifests prints a %s, which devapi does not know", u.GetKind())
		}
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		if ns := u.GetNamespace(); ns != "" {
			ri = dyn.Resource(gvr).Namespace(ns)
		}
		if _, err := ri.Create(ctx, &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := dyn.Resource(manifests.AddressPoolGVR).List(ctx, metav1.ListOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the AddressPool CRD is not served after 30s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
