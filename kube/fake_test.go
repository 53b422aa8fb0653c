package kube

import (
	"context"
	"fmt"
	"reflect"

	"github.com/netloom/netloom/kube/manifests"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

// fakeAPI is API over client-go's fake clientset (its object tracker and
// reactors, which the tests program) and fake dynamic client.
type fakeAPI struct {
	c   *fake.Clientset
	dyn *dynamicfake.FakeDynamicClient
}

func newFakeAPI(c *fake.Clientset) fakeAPI {
	return fakeAPI{c: c, dyn: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{manifests.AddressPoolGVR: "AddressPoolList"})}
}

// gvr is resource's group version, from apiResources.
func gvr(resource string) schema.GroupVersionResource {
	for _, g := range apiResources {
		for _, r := range g.Resources {
			if r == resource {
				return g.GroupVersion.WithResource(r)
			}
		}
	}
	panic("no such resource " + resource)
}

func (f fakeAPI) ListWatch(resource string) cache.ListerWatcher {
	if resource == manifests.AddressPoolGVR.Resource {
		return poolsListWatch(f.dyn)
	}
	res := gvr(resource)
	// The tracker lists by the item's kind.
	kind := res.GroupVersion().WithKind(map[string]string{"pods": "Pod", "namespaces": "Namespace",
		"services": "Service", "nodes": "Node", "endpointslices": "EndpointSlice",
		"networkpolicies": "NetworkPolicy", "servicecidrs": "ServiceCIDR"}[resource])
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return f.c.Invokes(k8stesting.NewRootListActionWithOptions(res, kind, o), nil)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return f.c.InvokesWatch(k8stesting.NewRootWatchActionWithOptions(res, o))
		},
	}, f.c)
}

func (f fakeAPI) Get(_ context.Context, r Ref, into runtime.Object) error {
	return f.invoke(k8stesting.NewGetAction(gvr(r.Resource), r.Namespace, r.Name), into)
}

func (f fakeAPI) Create(_ context.Context, r Ref, obj, into runtime.Object) error {
	var a k8stesting.Action = k8stesting.NewCreateAction(gvr(r.Resource), r.Namespace, obj)
	if r.Subresource != "" {
		a = k8stesting.NewCreateSubresourceAction(gvr(r.Resource), r.Name, r.Subresource, r.Namespace, obj)
	}
	return f.invoke(a, into)
}

func (f fakeAPI) Update(_ context.Context, r Ref, obj, into runtime.Object) error {
	var a k8stesting.Action = k8stesting.NewUpdateAction(gvr(r.Resource), r.Namespace, obj)
	if r.Subresource != "" {
		a = k8stesting.NewUpdateSubresourceAction(gvr(r.Resource), r.Subresource, r.Namespace, obj)
	}
	return f.invoke(a, into)
}

func (f fakeAPI) Patch(_ context.Context, r Ref, pt types.PatchType, data []byte) error {
	_, err := f.c.Invokes(k8stesting.NewPatchSubresourceAction(gvr(r.Resource), r.Namespace, r.Name, pt, data, r.Subresource), nil)
	return err
}

func (f fakeAPI) Version(context.Context) (*version.Info, error) {
	return f.c.Discovery().ServerVersion()
}

// invoke runs a through the fake's reactors and copies what it returns
// into into.
func (f fakeAPI) invoke(a k8stesting.Action, into runtime.Object) error {
	out, err := f.c.Invokes(a, nil)
	if err != nil {
		return err
	}
	return setInto(into, out)
}

// setInto copies src into dst, pointers to the same type (dst nil: drop
// src).
func setInto(dst, src runtime.Object) error {
	if dst == nil {
		return nil
	}
	d, s := reflect.ValueOf(dst), reflect.ValueOf(src)
	if src == nil || s.IsNil() || d.Type() != s.Type() {
		return fmt.Errorf("fake API: got %T, want %T", src, dst)
	}
	d.Elem().Set(s.Elem())
	return nil
}
