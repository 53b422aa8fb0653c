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
	// Node ports on the LAN and on one more prefix; loopback is cut out
	// of 127.0.0.0/7, IPv6 is skipped.
	testNodePortAddrs = []netip.Prefix{
		netip.MustParsePrefix("192.168.50.0/24"),
		netip.MustParsePrefix("126.0.0.0/7"),
		netip.MustParsePrefix("fd00::/64"),
	}
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

// terminating is an endpoint being deleted, still serving or not.
func terminating(name, ip, node string, serving bool) lb.Endpoint {
	e := ep(name, ip, node)
	e.Ready, e.Serving, e.Terminating = false, serving, true
	return e
}

// withNodePorts gives s node ports (one per port, in order).
func withNodePorts(s ServiceAddrs, ports ...uint16) ServiceAddrs {
	s.Service.NodePorts = true
	s.NodePorts = ports
	return s
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

	np := withNodePorts(svc("np", lb.TypeNodePort, "10.96.0.80", "", tcp(80, 8080), udp(53, 5353)), 30080, 30053)

	npLocal := withNodePorts(svc("np-local", lb.TypeLoadBalancer, "10.96.0.81", "198.51.100.16", tcp(80, 8080)), 30081)
	npLocal.Service.ExternalTrafficPolicy = lb.PolicyLocal

	npLocalNone := withNodePorts(svc("np-local-none", lb.TypeNodePort, "10.96.0.82", "", tcp(80, 8080)), 30082)
	npLocalNone.Service.ExternalTrafficPolicy = lb.PolicyLocal

	npEmpty := withNodePorts(svc("np-empty", lb.TypeNodePort, "10.96.0.83", "", tcp(80, 8080)), 30083)

	ext := svc("ext", lb.TypeClusterIP, "10.96.0.84", "", tcp(80, 8080))
	ext.Service.ExternalIPs = []netip.Addr{addr("203.0.113.11"), addr("203.0.113.10"), addr("203.0.113.11")}

	extLocal := svc("ext-local", lb.TypeClusterIP, "10.96.0.85", "", tcp(80, 8080))
	extLocal.Service.ExternalIPs = []netip.Addr{addr("203.0.113.12")}
	extLocal.Service.ExternalTrafficPolicy = lb.PolicyLocal

	internal := svc("internal-local", lb.TypeClusterIP, "10.96.0.86", "", tcp(80, 8080))
	internal.Service.InternalTrafficPolicy = lb.PolicyLocal

	internalNone := svc("internal-local-none", lb.TypeClusterIP, "10.96.0.87", "", tcp(80, 8080))
	internalNone.Service.InternalTrafficPolicy = lb.PolicyLocal

	term := svc("terminating", lb.TypeLoadBalancer, "10.96.0.88", "198.51.100.17", tcp(80, 8080))
	term.Service.ExternalTrafficPolicy = lb.PolicyLocal

	termOnly := svc("terminating-only", lb.TypeClusterIP, "10.96.0.89", "", tcp(80, 8080))

	stickyAll := withNodePorts(svc("sticky-policies", lb.TypeLoadBalancer, "10.96.0.90", "198.51.100.18", tcp(80, 8080)), 30090)
	stickyAll.Service.SessionAffinity = true
	stickyAll.Service.AffinityTimeout = 30 * time.Second
	stickyAll.Service.ExternalTrafficPolicy = lb.PolicyLocal
	stickyAll.Service.InternalTrafficPolicy = lb.PolicyLocal
	stickyAll.Service.ExternalIPs = []netip.Addr{addr("203.0.113.13")}

	stickyNP := withNodePorts(svc("sticky-np", lb.TypeNodePort, "10.96.0.91", "", tcp(80, 8080)), 30091)
	stickyNP.Service.SessionAffinity = true

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
		{"nodeport", np, []lb.Endpoint{
			ep("np-1", "10.244.1.81", testNode),
			ep("np-2", "10.244.2.81", "node2"),
		}},
		{"nodeport-local", npLocal, []lb.Endpoint{
			ep("npl-1", "10.244.1.82", testNode),
			ep("npl-2", "10.244.2.82", "node2"),
			ep("npl-3", "10.244.2.83", "node2"),
		}},
		{"nodeport-local-none", npLocalNone, []lb.Endpoint{
			ep("npn-1", "10.244.2.84", "node2"),
		}},
		{"nodeport-no-endpoints", npEmpty, nil},
		{"external-ips", ext, []lb.Endpoint{
			ep("ext-1", "10.244.1.85", testNode),
			ep("ext-2", "10.244.2.85", "node2"),
		}},
		{"external-ips-local", extLocal, []lb.Endpoint{
			ep("extl-1", "10.244.1.86", testNode),
			ep("extl-2", "10.244.2.86", "node2"),
		}},
		{"internal-local", internal, []lb.Endpoint{
			ep("int-1", "10.244.1.87", testNode),
			ep("int-2", "10.244.2.87", "node2"),
		}},
		{"internal-local-none", internalNone, []lb.Endpoint{
			ep("intn-1", "10.244.2.88", "node2"),
		}},
		// Ready endpoints elsewhere, only a terminating one here: every
		// endpoint is the ready remote one, the local one the terminating.
		{"terminating", term, []lb.Endpoint{
			ep("term-1", "10.244.2.89", "node2"),
			terminating("term-2", "10.244.1.89", testNode, true),
			terminating("term-3", "10.244.2.90", "node2", true),
		}},
		// No ready endpoint: the serving terminating ones.
		{"terminating-only", termOnly, []lb.Endpoint{
			terminating("termo-1", "10.244.1.91", testNode, true),
			terminating("termo-2", "10.244.2.91", "node2", true),
			terminating("termo-3", "10.244.2.92", "node2", false), // not serving
		}},
		{"affinity-policies", stickyAll, []lb.Endpoint{
			ep("stp-1", "10.244.1.93", testNode),
			ep("stp-2", "10.244.2.93", "node2"),
		}},
		{"affinity-nodeport", stickyNP, []lb.Endpoint{
			ep("stn-1", "10.244.1.94", testNode),
			ep("stn-2", "10.244.2.94", "node2"),
		}},
	}
}

func inputOf(fs ...fixture) Input {
	in := Input{
		Node:        testNode,
		Endpoints:   map[lb.ServiceKey][]lb.Endpoint{},
		ClusterCIDR: testClusterCIDR,
		PodSubnet:   testPodSubnet,
		WGIface:     testWG,

		NodePortAddresses: testNodePortAddrs,
	}
	for _, f := range fs {
		in.Services = append(in.Services, f.svc)
		if f.eps != nil {
			in.Endpoints[f.svc.Service.Key()] = f.eps
		}
	}
	return in
}
