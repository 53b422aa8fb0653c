package proxy

import (
	"net/netip"
	"time"

	"github.com/netloom/netloom/lb"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Fixtures shared by the golden, table and kernel tests.

const testNode = "node1"

var (
	testClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	testPodSubnet   = netip.MustParsePrefix("10.244.1.0/24")
	testWG          = "nlwg0"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func ep(name, ip, node string, ports ...any) lb.Endpoint {
	e := lb.Endpoint{PodNamespace: "default", PodName: name, Node: node, Ready: ip != ""}
	if ip != "" {
		e.IP = addr(ip)
	}
	for i := 0; i+1 < len(ports); i += 2 {
		if e.Ports == nil {
			e.Ports = map[string]uint16{}
		}
		e.Ports[ports[i].(string)] = uint16(ports[i+1].(int))
	}
	return e
}

func tcp(port uint16, target int32) lb.ServicePort {
	return lb.ServicePort{Protocol: "TCP", Port: port, TargetPort: intstr.FromInt32(target)}
}

func udp(port uint16, target int32) lb.ServicePort {
	return lb.ServicePort{Protocol: "UDP", Port: port, TargetPort: intstr.FromInt32(target)}
}

// fixture is one representative service with its endpoints.
type fixture struct {
	name string // golden file name without extension
	svc  ServiceAddrs
	eps  []lb.Endpoint
}

func svc(name, typ, cip, vip string, ports ...lb.ServicePort) ServiceAddrs {
	s := ServiceAddrs{Service: lb.Service{
		Namespace: "default", Name: name, Type: typ,
		Selector: map[string]string{"app": name},
		Ports:    ports,
	}}
	if cip != "" {
		s.ClusterIP = addr(cip)
	}
	if vip != "" {
		s.VIP = addr(vip)
	}
	return s
}

func fixtures() []fixture {
	local := svc("lb-local", lb.TypeLoadBalancer, "10.96.0.30", "198.51.100.11", tcp(80, 8080))
	local.Service.ExternalTrafficPolicy = lb.PolicyLocal

	localNone := svc("lb-local-none", lb.TypeLoadBalancer, "10.96.0.31", "198.51.100.14", tcp(80, 8080))
	localNone.Service.ExternalTrafficPolicy = lb.PolicyLocal

	ranges := svc("lb-ranges", lb.TypeLoadBalancer, "10.96.0.40", "198.51.100.12", tcp(443, 8443))
	ranges.Service.SourceRanges = []netip.Prefix{
		netip.MustParsePrefix("203.0.113.7/32"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("192.0.2.128/25"), // inside the /24: dropped
	}

	sticky := svc("sticky", lb.TypeClusterIP, "10.96.0.50", "", tcp(80, 8080))
	sticky.Service.SessionAffinity = true
	sticky.Service.AffinityTimeout = 10 * time.Minute

	stickyLocal := svc("sticky-local", lb.TypeLoadBalancer, "10.96.0.51", "198.51.100.15", tcp(80, 8080))
	stickyLocal.Service.SessionAffinity = true
	stickyLocal.Service.ExternalTrafficPolicy = lb.PolicyLocal

	named := svc("named", lb.TypeClusterIP, "10.96.0.60", "",
		lb.ServicePort{Name: "http", Protocol: "TCP", Port: 80, TargetPort: intstr.FromString("http")})

	return []fixture{
		{"clusterip", svc("web", lb.TypeClusterIP, "10.96.0.10", "", tcp(80, 8080)), []lb.Endpoint{
			ep("web-2", "10.244.2.11", "node2"),
			ep("web-1", "10.244.1.11", testNode),
		}},
		{"lb-cluster", svc("lb-cluster", lb.TypeLoadBalancer, "10.96.0.20", "198.51.100.10", tcp(80, 8080), udp(53, 5353)), []lb.Endpoint{
			ep("lbc-1", "10.244.1.21", testNode),
			ep("lbc-2", "10.244.2.21", "node2"),
			ep("lbc-3", "10.244.3.21", "node3"),
		}},
		{"lb-local", local, []lb.Endpoint{
			ep("lbl-1", "10.244.1.31", testNode),
			ep("lbl-2", "10.244.2.31", "node2"),
			ep("lbl-3", "10.244.2.32", "node2"),
		}},
		{"lb-local-none", localNone, []lb.Endpoint{
			ep("lbn-1", "10.244.2.35", "node2"),
		}},
		{"source-ranges", ranges, []lb.Endpoint{
			ep("lbr-1", "10.244.1.41", testNode),
		}},
		{"affinity", sticky, []lb.Endpoint{
			ep("sticky-1", "10.244.1.51", testNode),
			ep("sticky-2", "10.244.2.51", "node2"),
		}},
		{"affinity-local", stickyLocal, []lb.Endpoint{
			ep("stl-1", "10.244.1.55", testNode),
			ep("stl-2", "10.244.1.56", testNode),
			ep("stl-3", "10.244.2.55", "node2"),
		}},
		{"named-port", named, []lb.Endpoint{
			ep("named-1", "10.244.1.61", testNode, "http", 8081),
			ep("named-2", "10.244.2.61", "node2", "http", 9091),
			ep("named-3", "10.244.2.62", "node2", "metrics", 9100), // no "http": not an endpoint
			ep("named-4", "", testNode, "http", 8081),              // not ready
		}},
		{"udp", svc("dns", lb.TypeClusterIP, "10.96.0.53", "", udp(53, 53)), []lb.Endpoint{
			ep("dns-1", "10.244.1.53", testNode),
			ep("dns-2", "10.244.2.53", "node2"),
		}},
		{"no-endpoints", svc("empty", lb.TypeLoadBalancer, "10.96.0.70", "198.51.100.13", tcp(80, 8080), udp(53, 53)), nil},
	}
}

func inputOf(fs ...fixture) Input {
	in := Input{
		Node:        testNode,
		Endpoints:   map[lb.ServiceKey][]lb.Endpoint{},
		ClusterCIDR: testClusterCIDR,
		PodSubnet:   testPodSubnet,
		WGIface:     testWG,
	}
	for _, f := range fs {
		in.Services = append(in.Services, f.svc)
		if f.eps != nil {
			in.Endpoints[f.svc.Service.Key()] = f.eps
		}
	}
	return in
}
