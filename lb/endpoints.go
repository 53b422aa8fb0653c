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
// container port of the pod; or what the endpoint's ServicePorts say. ok is false when the pod has no port of that
// name: the endpoint does not serve that service port.
func TargetPort(sp ServicePort, ep Endpoint) (port uint16, ok bool) {
	if ep.ServicePorts != nil {
		port, ok = ep.ServicePorts[sp.Name]
		return port, ok && port != 0
	}
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

// Backend is one endpoint of one service port: where to send it.
type Backend struct {
	IP   netip.Addr
	Port uint16
	Node string
}

// TakesNew reports whether ep may take new connections when no endpoint of
// its service port is Ready: it is terminating but still serving
// (KEP-1669).
func (ep Endpoint) TakesNew() bool {
	return ep.Serving && ep.Terminating
}

// Backends returns, for each of the service's ports (same index as
// s.Ports), the endpoints that take its new connections, with their
// resolved target port, in the order of eps: the Ready ones that serve the
// port or, when none is Ready, the serving terminating ones (KEP-1669).
// Endpoints without an address are never backends.
func Backends(s Service, eps []Endpoint) [][]Backend {
	out := make([][]Backend, len(s.Ports))
	for i, sp := range s.Ports {
		var ready, terminating []Backend
		for _, ep := range eps {
			if !ep.IP.IsValid() || !ep.Ready && !ep.TakesNew() {
				continue
			}
			port, ok := TargetPort(sp, ep)
			if !ok {
				continue
			}
			b := Backend{IP: ep.IP, Port: port, Node: ep.Node}
			if ep.Ready {
				ready = append(ready, b)
			} else {
				terminating = append(terminating, b)
			}
		}
		out[i] = ready
		if len(ready) == 0 {
			out[i] = terminating
		}
	}
	return out
}

// LocalBackends is Backends among the endpoints on node: what a policy
// Local (external or internal traffic) uses on that node. The fallback to
// terminating endpoints is decided among them alone: with no Ready
// endpoint on node, its serving terminating ones are used even when other
// nodes have Ready ones.
func LocalBackends(s Service, eps []Endpoint, node string) [][]Backend {
	var local []Endpoint
	for _, ep := range eps {
		if node != "" && ep.Node == node {
			local = append(local, ep)
		}
	}
	return Backends(s, local)
}
