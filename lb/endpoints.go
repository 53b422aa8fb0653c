package lb

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is what lb needs of a pod to make it an endpoint.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// IP is the pod's address as registered by the CNI plugin; zero
	// while it has none. A pod with an address is ready.
	IP   netip.Addr
	Node string
	// Ports maps the names of its containers' ports to their numbers.
	Ports map[string]uint16
	// Unready: the pod's Ready condition is false. Terminating: the pod
	// is being deleted (it may still serve).
	Unready, Terminating bool
}

// Selects reports whether the service's selector matches the labels. An
// empty selector matches nothing: such a service's endpoints are not
// managed.
func Selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	return true
}

// Endpoints returns the pods of the service's namespace that its selector
// matches, sorted by pod namespace and name. A pod serves when it has an
// address and its Ready condition is not false, and is ready when it
// serves and is not terminating; with publishNotReadyAddresses every pod
// with an address is ready.
func Endpoints(s Service, pods []Pod) []Endpoint {
	var eps []Endpoint
	for _, p := range pods {
		if p.Namespace != s.Namespace || !Selects(s.Selector, p.Labels) {
			continue
		}
		serving := p.IP.IsValid() && (!p.Unready || s.PublishNotReady)
		eps = append(eps, Endpoint{
			PodNamespace: p.Namespace,
			PodName:      p.Name,
			IP:           p.IP,
			Node:         p.Node,
			// As the EndpointSlice controller: ready = serving and not
			// terminating, unless publishNotReadyAddresses.
			Ready:       serving && (!p.Terminating || s.PublishNotReady),
			Serving:     serving,
			Terminating: p.Terminating,
			Ports:       p.Ports,
		})
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.PodNamespace, b.PodNamespace), cmp.Compare(a.PodName, b.PodName))
	})
	return eps
}

// AllEndpoints returns Endpoints for every service, keyed by service.
// Pods are grouped by namespace first, so the cost is about pods plus
// services times the pods of their namespace.
func AllEndpoints(services []Service, pods []Pod) map[ServiceKey][]Endpoint {
	byNS := make(map[string][]Pod)
	for _, p := range pods {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	out := make(map[ServiceKey][]Endpoint, len(services))
	for _, s := range services {
		if eps := Endpoints(s, byNS[s.Namespace]); len(eps) > 0 {
			out[s.Key()] = eps
		}
	}
	return out
}

// TargetPort resolves the service port's targetPort for one endpoint: a
// number (0 or unset means the service port itself), or the name of a
// container port of the pod. ok is false when the pod has no port of that
// name: the endpoint does not serve that service port.
func TargetPort(sp ServicePort, ep Endpoint) (port uint16, ok bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int {
		if tp.IntVal <= 0 || tp.IntVal > 65535 {
			return sp.Port, true
		}
		return uint16(tp.IntVal), true
	}
	if tp.StrVal == "" {
		return sp.Port, true
	}
	port, ok = ep.Ports[tp.StrVal]
	return port, ok && port != 0
}

// Backend is one ready endpoint of one service port: where to send it.
type Backend struct {
	IP   netip.Addr
	Port uint16
	Node string
}

// Backends returns, for each of the service's ports (same index as
// s.Ports), the ready endpoints that serve it with their resolved target
// port, in the order of eps.
func Backends(s Service, eps []Endpoint) [][]Backend {
	out := make([][]Backend, len(s.Ports))
	for i, sp := range s.Ports {
		for _, ep := range eps {
			if !ep.Ready || !ep.IP.IsValid() {
				continue
			}
			if port, ok := TargetPort(sp, ep); ok {
				out[i] = append(out[i], Backend{IP: ep.IP, Port: port, Node: ep.Node})
			}
		}
	}
	return out
}

// TakingNew returns the endpoints that take new connections, in the order
// of eps: the ready ones with an address; when none is ready, the ones
// that are terminating but still serving (KEP-1669), so that a service
// whose pods are all shutting down keeps answering until they stop.
// Connections already open stay with their endpoint either way.
func TakingNew(eps []Endpoint) []Endpoint {
	var ready, fallback []Endpoint
	for _, ep := range eps {
		switch {
		case !ep.IP.IsValid():
		case ep.Ready:
			ready = append(ready, ep)
		case ep.Serving && ep.Terminating:
			fallback = append(fallback, ep)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return fallback
}
