package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/netloom/netloom/kube/manifests"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// API is what netloom asks of the Kubernetes API server: the list and
// watch of each resource it follows, and single objects read and written.
//
// It is not client-go's clientset on purpose. The clientset and the
// informer factory link every API group Kubernetes has: with them the
// binary was 97 MB of 874 packages against 46 MB of 522, and every
// netloom process (the WireGuard companion and the agent in standalone
// mode too) kept 13 MiB more of it resident, touched by package init
// alone (BENCHMARKS.md section 3). netloom's own REST clients (NewAPI)
// know only the groups of apiResources.
type API interface {
	// ListWatch lists and watches resource (its plural name, one of
	// apiResources) in every namespace.
	ListWatch(resource string) cache.ListerWatcher
	Get(ctx context.Context, r Ref, into runtime.Object) error
	// Create posts obj (to r.Name's r.Subresource when set, e.g. a
	// ServiceAccount's token) and decodes the answer into into (nil: drop
	// it).
	Create(ctx context.Context, r Ref, obj, into runtime.Object) error
	// Update puts obj (to r.Subresource when set, e.g. status).
	Update(ctx context.Context, r Ref, obj, into runtime.Object) error
	Patch(ctx context.Context, r Ref, pt types.PatchType, data []byte) error
	// Version is the server's /version: the cheapest request there is,
	// for probing the server.
	Version(ctx context.Context) (*version.Info, error)
}

// Ref names an object (or, without Name, a collection) of the API.
type Ref struct {
	Resource, Namespace, Name, Subresource string
}

// apiResources is every resource API serves, by group version. AddressPools
// (manifests.AddressPoolGVR) are served through the dynamic client.
var apiResources = []struct {
	GroupVersion schema.GroupVersion
	Resources    []string
}{
	{corev1.SchemeGroupVersion, []string{"pods", "namespaces", "services", "nodes", "events", "serviceaccounts"}},
	{discoveryv1.SchemeGroupVersion, []string{"endpointslices"}},
	{networkingv1.SchemeGroupVersion, []string{"networkpolicies", "servicecidrs"}},
	{authorizationv1.SchemeGroupVersion, []string{"selfsubjectaccessreviews"}},
}

// codecs encode and decode the API types netloom reads and writes, and no
// others. They are built on first use, not at start: registering the types
// reads the type data of every one of them, pages that the processes that
// never talk to an API server (the agent without Kubernetes, the WireGuard
// companion, the CNI plugin) then need not map.
var codecs = sync.OnceValue(func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(discoveryv1.AddToScheme(scheme))
	utilruntime.Must(networkingv1.AddToScheme(scheme))
	utilruntime.Must(authorizationv1.AddToScheme(scheme))
	// The body of serviceaccounts/token (the dev control plane's tokens).
	utilruntime.Must(authenticationv1.AddToScheme(scheme))
	return serializer.NewCodecFactory(scheme)
})

// restAPI is API over REST clients of the API server, one per group
// version, sharing one HTTP client and one rate limit.
type restAPI struct {
	core       rest.Interface
	byResource map[string]rest.Interface
	dyn        dynamic.Interface
}

// NewAPI makes the API of a REST config. It does not contact the server.
func NewAPI(cfg *rest.Config) (API, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	a := &restAPI{byResource: map[string]rest.Interface{}}
	for _, g := range apiResources {
		gcfg := rest.CopyConfig(cfg)
		gv := g.GroupVersion
		gcfg.GroupVersion, gcfg.APIPath = &gv, "/apis"
		if gv.Group == "" {
			gcfg.APIPath = "/api"
		}
		gcfg.NegotiatedSerializer = codecs().WithoutConversion()
		// Built-in types in protobuf: a list of 10,000 services is half
		// the bytes of JSON and decodes in a quarter of the CPU time
		// (BenchmarkDecodeServiceList; the garbage is the same).
		gcfg.ContentType = runtime.ContentTypeProtobuf
		gcfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		c, err := rest.RESTClientForConfigAndClient(gcfg, hc)
		if err != nil {
			return nil, err
		}
		if gv.Group == "" {
			a.core = c
		}
		for _, r := range g.Resources {
			a.byResource[r] = c
		}
	}
	if a.dyn, err = dynamic.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	return a, nil
}

// client is the REST client of resource's group.
func (a *restAPI) client(resource string) rest.Interface {
	c := a.byResource[resource]
	if c == nil {
		// A programming error: apiResources names every resource netloom uses.
		panic(fmt.Sprintf("kube: no REST client for resource %q", resource))
	}
	return c
}

func (a *restAPI) request(r Ref, verb string) *rest.Request {
	req := a.client(r.Resource).Verb(verb).Resource(r.Resource)
	// A cluster-scoped object has no namespace; client-go refuses an
	// empty one on create.
	if r.Namespace != "" {
		req = req.Namespace(r.Namespace)
	}
	if r.Name != "" {
		req = req.Name(r.Name)
	}
	if r.Subresource != "" {
		req = req.SubResource(r.Subresource)
	}
	return req
}

// into decodes res into obj, or only checks it when obj is nil.
func into(res rest.Result, obj runtime.Object) error {
	if obj == nil {
		return res.Error()
	}
	return res.Into(obj)
}

func (a *restAPI) Get(ctx context.Context, r Ref, obj runtime.Object) error {
	return a.request(r, "GET").Do(ctx).Into(obj)
}

func (a *restAPI) Create(ctx context.Context, r Ref, obj, out runtime.Object) error {
	return into(a.request(r, "POST").Body(obj).Do(ctx), out)
}

func (a *restAPI) Update(ctx context.Context, r Ref, obj, out runtime.Object) error {
	return into(a.request(r, "PUT").Body(obj).Do(ctx), out)
}

func (a *restAPI) Patch(ctx context.Context, r Ref, pt types.PatchType, data []byte) error {
	return a.request(r, "PATCH").SetHeader("Content-Type", string(pt)).Body(data).Do(ctx).Error()
}

func (a *restAPI) Version(ctx context.Context) (*version.Info, error) {
	b, err := a.core.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return nil, err
	}
	var v version.Info
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("the API server's /version: %w", err)
	}
	return &v, nil
}

func (a *restAPI) ListWatch(resource string) cache.ListerWatcher {
	if resource == manifests.AddressPoolGVR.Resource {
		return poolsListWatch(a.dyn)
	}
	return cache.NewListWatchFromClient(a.client(resource), resource, metav1.NamespaceAll, fields.Everything())
}

// poolsListWatch lists and watches AddressPools through dyn.
func poolsListWatch(dyn dynamic.Interface) cache.ListerWatcher {
	pools := dyn.Resource(manifests.AddressPoolGVR)
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return pools.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return pools.Watch(ctx, o)
		},
	}, dyn)
}
