package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
)

// apiRecorder is an HTTP server that records each request and answers
// with the JSON object answer returns for it.
type apiRecorder struct {
	mu   sync.Mutex
	reqs []string
}

func (r *apiRecorder) serve(answer func(*http.Request) any) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path+" "+req.Header.Get("Content-Type")+" accept="+req.Header.Get("Accept"))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(req))
	}))
}

func (r *apiRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		return ""
	}
	return r.reqs[len(r.reqs)-1]
}

// The REST API asks the paths and verbs the API server serves, in
// protobuf for built-in types, and decodes the answers.
func TestRESTAPIRequests(t *testing.T) {
	var rec apiRecorder
	srv := rec.serve(func(req *http.Request) any {
		switch {
		case req.URL.Path == "/version":
			return map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.2"}
		case strings.HasSuffix(req.URL.Path, "/token"):
			return map[string]any{"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "status": map[string]string{"token": "t0k"}}
		case strings.Contains(req.URL.Path, "selfsubjectaccessreviews"):
			return map[string]any{"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "status": map[string]bool{"allowed": true}}
		case strings.HasSuffix(req.URL.Path, "/endpointslices"):
			return map[string]any{"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": map[string]string{"resourceVersion": "7"},
				"items": []any{map[string]any{"metadata": map[string]string{"namespace": "x", "name": "web-1"}, "addressType": "IPv4"}}}
		}
		return map[string]any{"kind": "Service", "apiVersion": "v1", "metadata": map[string]string{"namespace": "x", "name": "web"}}
	})
	t.Cleanup(srv.Close)
	api, err := NewAPI(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const pb = "application/vnd.kubernetes.protobuf"
	accept := " accept=" + pb + "," + runtime.ContentTypeJSON

	svc := &corev1.Service{}
	tr := &authenticationv1.TokenRequest{}
	ssar := &authorizationv1.SelfSubjectAccessReview{}
	steps := []struct {
		name string
		do   func() error
		want string
	}{
		{"get a namespaced object", func() error { return api.Get(ctx, Ref{Resource: "services", Namespace: "x", Name: "web"}, svc) },
			"GET /api/v1/namespaces/x/services/web " + accept},
		{"create a cluster-scoped object", func() error {
			return api.Create(ctx, Ref{Resource: "nodes"}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, nil)
		}, "POST /api/v1/nodes " + pb + accept},
		{"create in a namespace", func() error { return api.Create(ctx, Ref{Resource: "events", Namespace: "x"}, &corev1.Event{}, nil) },
			"POST /api/v1/namespaces/x/events " + pb + accept},
		{"create a subresource", func() error {
			return api.Create(ctx, Ref{Resource: "serviceaccounts", Namespace: "kube-system", Name: "netloom", Subresource: "token"}, tr, tr)
		}, "POST /api/v1/namespaces/kube-system/serviceaccounts/netloom/token " + pb + accept},
		{"another group", func() error { return api.Create(ctx, Ref{Resource: "selfsubjectaccessreviews"}, ssar, ssar) },
			"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews " + pb + accept},
		{"update a status", func() error {
			return api.Update(ctx, Ref{Resource: "services", Namespace: "x", Name: "web", Subresource: "status"}, &corev1.Service{}, nil)
		}, "PUT /api/v1/namespaces/x/services/web/status " + pb + accept},
		{"patch a status", func() error {
			return api.Patch(ctx, Ref{Resource: "nodes", Name: "n1", Subresource: "status"}, types.StrategicMergePatchType, []byte(`{}`))
		}, "PATCH /api/v1/nodes/n1/status " + string(types.StrategicMergePatchType) + accept},
		{"version", func() error { _, err := api.Version(ctx); return err }, "GET /version "},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Errorf("%s: %v", s.name, err)
			continue
		}
		if got := rec.last(); !strings.HasPrefix(got, s.want) {
			t.Errorf("%s: asked %q, want %q", s.name, got, s.want)
		}
	}
	if svc.Name != "web" || tr.Status.Token != "t0k" || !ssar.Status.Allowed {
		t.Errorf("answers not decoded: service %q, token %q, allowed %v", svc.Name, tr.Status.Token, ssar.Status.Allowed)
	}

	list, err := api.ListWatch("endpointslices").List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); !strings.HasPrefix(got, "GET /apis/discovery.k8s.io/v1/endpointslices ") {
		t.Errorf("list asked %q", got)
	}
	if l, ok := list.(*discoveryv1.EndpointSliceList); !ok || len(l.Items) != 1 || l.Items[0].Name != "web-1" {
		t.Errorf("list = %#v, want one typed EndpointSlice", list)
	}
}

// BenchmarkDecodeServiceList decodes the list of 10,000 services an
// informer's first list gets, in each wire format the API server offers.
func BenchmarkDecodeServiceList(b *testing.B) {
	list := &corev1.ServiceList{TypeMeta: metav1.TypeMeta{Kind: "ServiceList", APIVersion: "v1"}}
	for i := range 10000 {
		list.Items = append(list.Items, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns" + strconv.Itoa(i%5), Name: "svc-" + strconv.Itoa(i), UID: types.UID("uid-" + strconv.Itoa(i)),
				ResourceVersion: strconv.Itoa(1000 + i), Labels: map[string]string{"app": "svc-" + strconv.Itoa(i)}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"},
				Selector: map[string]string{"app": "svc-" + strconv.Itoa(i)},
				Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		})
	}
	for _, mediaType := range []string{runtime.ContentTypeJSON, runtime.ContentTypeProtobuf} {
		info, ok := runtime.SerializerInfoForMediaType(codecs().SupportedMediaTypes(), mediaType)
		if !ok {
			b.Fatalf("no serializer for %s", mediaType)
		}
		var buf bytes.Buffer
		if err := codecs().EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(list, &buf); err != nil {
			b.Fatal(err)
		}
		dec := codecs().WithoutConversion().DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
		b.Run(mediaType[strings.LastIndex(mediaType, "/")+1:], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(buf.Len()))
			for b.Loop() {
				out, _, err := dec.Decode(buf.Bytes(), nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				if n := len(out.(*corev1.ServiceList).Items); n != 10000 {
					b.Fatalf("decoded %d services", n)
				}
			}
		})
	}
}
