package objects

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/netloom/netloom/lb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Limits of sessionAffinityConfig.clientIP.timeoutSeconds, as in
// Kubernetes.
const (
	defaultAffinitySeconds = corev1.DefaultClientIPServiceAffinitySeconds // 3 hours
	maxAffinitySeconds     = 86400                                        // 1 day
)

// pending is what tables show for an address that is not there yet, like
// kubectl.
const pending = "<pending>"

// DecodeService decodes a normalized Service (Object.JSON of kind Service).
func DecodeService(raw json.RawMessage) (*corev1.Service, error) {
	var s corev1.Service
	if err := decodeStored(raw, "Service", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// serviceSpec is what decodeServiceDoc hands to checkServiceSpec: the spec,
// which it marshals as (the embedded struct's fields are promoted), and the
// annotations, because one of them (lb.PoolAnnotation) is part of what the
// check validates.
type serviceSpec struct {
	corev1.ServiceSpec
	annotations map[string]string
}

func decodeServiceDoc(doc []byte) (*metav1.ObjectMeta, any, error) {
	var s corev1.Service
	if err := decodeTyped(doc, &s); err != nil {
		return nil, nil, err
	}
	return &s.ObjectMeta, &serviceSpec{ServiceSpec: s.Spec, annotations: s.Annotations}, nil
}

// checkServiceSpec validates a Service spec for what netloom implements and
// applies the API server's defaults:
//   - type ClusterIP (default) or LoadBalancer; NodePort, ExternalName and
//     headless services (clusterIP: None) are rejected, and so are
//     externalIPs, internalTrafficPolicy Local and ipFamilyPolicy
//     RequireDualStack;
//   - clusterIP, loadBalancerIP: an IP address (whether it is free and in
//     range is lb.ValidateApply's question); clusterIPs: at most one entry,
//     equal to clusterIP, which it fills when empty;
//   - ports: at least one; protocol TCP (default) or UDP; port 1-65535;
//     targetPort a number 1-65535 or an IANA_SVC_NAME, defaulting to port;
//     names DNS labels, required and unique when there are several ports;
//     port and protocol unique;
//   - selector: label keys and values;
//   - loadBalancerIP and loadBalancerSourceRanges (CIDRs) only with type
//     LoadBalancer;
//   - externalTrafficPolicy Cluster or Local, Local only with type
//     LoadBalancer; it defaults to Cluster for LoadBalancer and is dropped
//     for ClusterIP, where it means nothing;
//   - sessionAffinity None (default) or ClientIP; sessionAffinityConfig only
//     with ClientIP, its clientIP.timeoutSeconds 1-86400, default 10800;
//   - the annotation lb.PoolAnnotation, when present: a DNS label (the name
//     of an AddressPool).
//
// Fields netloom does not use (nodePort, healthCheckNodePort, ipFamilies,
// loadBalancerClass, publishNotReadyAddresses, ...) are kept as given, so a
// Service exported from Kubernetes loads.
func checkServiceSpec(spec any) error {
	ss := spec.(*serviceSpec)
	s := &ss.ServiceSpec

	switch s.Type {
	case "":
		s.Type = corev1.ServiceTypeClusterIP
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeLoadBalancer:
	default:
		return fmt.Errorf("spec.type: unsupported type %q: netloom supports ClusterIP and LoadBalancer", s.Type)
	}
	isLB := s.Type == corev1.ServiceTypeLoadBalancer

	if err := checkClusterIPs(s); err != nil {
		return err
	}
	if err := checkServicePorts(s.Ports); err != nil {
		return err
	}
	if err := checkServiceSelector(s.Selector); err != nil {
		return err
	}

	if s.LoadBalancerIP != "" {
		if !isLB {
			return fmt.Errorf("spec.loadBalancerIP: only allowed with type LoadBalancer (this Service is %s)", s.Type)
		}
		if _, err := parseServiceIP(s.LoadBalancerIP, "192.168.1.240"); err != nil {
			return fmt.Errorf("spec.loadBalancerIP: %w", err)
		}
	}
	if len(s.LoadBalancerSourceRanges) > 0 && !isLB {
		return fmt.Errorf("spec.loadBalancerSourceRanges: only allowed with type LoadBalancer (this Service is %s)", s.Type)
	}
	for i, r := range s.LoadBalancerSourceRanges {
		if _, err := parseCIDR(r); err != nil {
			return fmt.Errorf("spec.loadBalancerSourceRanges[%d]: %w", i, err)
		}
	}
	if len(s.ExternalIPs) > 0 {
		return errors.New("spec.externalIPs: not supported by netloom (use type LoadBalancer; spec.loadBalancerIP asks for a given address)")
	}

	switch s.ExternalTrafficPolicy {
	case "", corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal:
	default:
		return fmt.Errorf("spec.externalTrafficPolicy: unsupported policy %q: must be Cluster or Local", s.ExternalTrafficPolicy)
	}
	switch {
	case isLB && s.ExternalTrafficPolicy == "":
		s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	case !isLB && s.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal:
		return fmt.Errorf("spec.externalTrafficPolicy: Local is only allowed with type LoadBalancer (this Service is %s)", s.Type)
	case !isLB:
		s.ExternalTrafficPolicy = "" // Cluster: the only meaning for a ClusterIP service
	}
	if p := s.InternalTrafficPolicy; p != nil {
		switch *p {
		case corev1.ServiceInternalTrafficPolicyCluster:
		case corev1.ServiceInternalTrafficPolicyLocal:
			return errors.New("spec.internalTrafficPolicy: Local is not supported by netloom (use Cluster or leave it out)")
		default:
			return fmt.Errorf("spec.internalTrafficPolicy: unsupported policy %q: must be Cluster", *p)
		}
	}

	if err := checkSessionAffinity(s); err != nil {
		return err
	}
	if p := s.IPFamilyPolicy; p != nil {
		switch *p {
		case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack:
		case corev1.IPFamilyPolicyRequireDualStack:
			return errors.New("spec.ipFamilyPolicy: RequireDualStack is not supported: netloom gives a service addresses of one IP family (use SingleStack or leave it out)")
		default:
			return fmt.Errorf("spec.ipFamilyPolicy: unsupported policy %q: must be SingleStack or PreferDualStack", *p)
		}
	}

	if pool, ok := ss.annotations[lb.PoolAnnotation]; ok {
		if errs := validation.IsDNS1123Label(pool); len(errs) > 0 {
			return fmt.Errorf("metadata.annotations[%s]: invalid AddressPool name %q: %s", lb.PoolAnnotation, pool, join(errs))
		}
	}
	return nil
}

const headless = "headless services (clusterIP: None) are not supported by netloom; leave clusterIP out to get an address"

// checkClusterIPs checks spec.clusterIP and spec.clusterIPs and fills
// clusterIP from clusterIPs when only the latter is given.
func checkClusterIPs(s *corev1.ServiceSpec) error {
	switch s.ClusterIP {
	case "":
	case corev1.ClusterIPNone:
		return errors.New("spec.clusterIP: " + headless)
	default:
		if _, err := parseServiceIP(s.ClusterIP, "10.96.0.10"); err != nil {
			return fmt.Errorf("spec.clusterIP: %w", err)
		}
	}
	switch len(s.ClusterIPs) {
	case 0:
		return nil
	case 1:
	default:
		return fmt.Errorf("spec.clusterIPs: %d addresses: netloom gives a service one ClusterIP (list at most one)", len(s.ClusterIPs))
	}
	c := s.ClusterIPs[0]
	if c == corev1.ClusterIPNone {
		return errors.New("spec.clusterIPs[0]: " + headless)
	}
	if _, err := parseServiceIP(c, "10.96.0.10"); err != nil {
		return fmt.Errorf("spec.clusterIPs[0]: %w", err)
	}
	if s.ClusterIP == "" {
		s.ClusterIP = c
	} else if c != s.ClusterIP {
		return fmt.Errorf("spec.clusterIPs[0]: %s differs from spec.clusterIP %s: they must be the same (or leave clusterIPs out)", c, s.ClusterIP)
	}
	return nil
}

// parseServiceIP parses a clusterIP or loadBalancerIP; example is an
// address to suggest.
func parseServiceIP(s, example string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("invalid IP address %q (e.g. %s, or leave it out to get one)", s, example)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("invalid IP address %q: zones are not allowed", s)
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("invalid IP address %q: an IPv4-mapped IPv6 address (write it as an IPv4 address)", s)
	}
	return a, nil
}

// checkServicePorts validates the ports of a service and defaults their
// protocol (TCP) and targetPort (the port).
func checkServicePorts(ports []corev1.ServicePort) error {
	if len(ports) == 0 {
		return errors.New("spec.ports: required (list at least one port)")
	}
	names := map[string]string{} // port name -> path where first seen
	seen := map[string]string{}  // "80/TCP" -> path where first seen
	for i := range ports {
		p := &ports[i]
		path := fmt.Sprintf("spec.ports[%d]", i)
		if p.Name == "" && len(ports) > 1 {
			return fmt.Errorf("%s.name: required when the service has more than one port", path)
		}
		if p.Name != "" {
			if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 {
				return fmt.Errorf("%s.name: invalid port name %q: %s", path, p.Name, join(errs))
			}
			if first, dup := names[p.Name]; dup {
				return fmt.Errorf("%s.name: duplicate port name %q (also %s)", path, p.Name, first)
			}
			names[p.Name] = path
		}
		switch p.Protocol {
		case "":
			p.Protocol = corev1.ProtocolTCP
		case corev1.ProtocolTCP, corev1.ProtocolUDP:
		default:
			return fmt.Errorf("%s.protocol: unknown protocol %q: netloom supports TCP and UDP", path, p.Protocol)
		}
		if errs := validation.IsValidPortNum(int(p.Port)); len(errs) > 0 {
			return fmt.Errorf("%s.port: invalid port %d: %s", path, p.Port, join(errs))
		}
		switch {
		case p.TargetPort.Type == intstr.String:
			if errs := validation.IsValidPortName(p.TargetPort.StrVal); len(errs) > 0 {
				return fmt.Errorf("%s.targetPort: invalid port name %q: %s", path, p.TargetPort.StrVal, join(errs))
			}
		case p.TargetPort.IntVal == 0:
			p.TargetPort = intstr.FromInt32(p.Port)
		default:
			if errs := validation.IsValidPortNum(int(p.TargetPort.IntVal)); len(errs) > 0 {
				return fmt.Errorf("%s.targetPort: invalid port %d: %s", path, p.TargetPort.IntVal, join(errs))
			}
		}
		if p.NodePort != 0 {
			if errs := validation.IsValidPortNum(int(p.NodePort)); len(errs) > 0 {
				return fmt.Errorf("%s.nodePort: invalid port %d: %s", path, p.NodePort, join(errs))
			}
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if first, dup := seen[key]; dup {
			return fmt.Errorf("%s: duplicate port %s (also %s)", path, key, first)
		}
		seen[key] = path
	}
	return nil
}

// checkServiceSelector validates a service's selector, a map of labels.
func checkServiceSelector(sel map[string]string) error {
	for _, k := range sortedKeys(sel) {
		if errs := content.IsLabelKey(k); len(errs) > 0 {
			return fmt.Errorf("spec.selector: invalid label key %q: %s", k, join(errs))
		}
		if errs := content.IsLabelValue(sel[k]); len(errs) > 0 {
			return fmt.Errorf("spec.selector[%s]: invalid label value %q: %s", k, sel[k], join(errs))
		}
	}
	// Whatever the checks above missed, the selector must convert the way
	// every consumer converts it.
	if _, err := labels.ValidatedSelectorFromSet(sel); err != nil {
		return fmt.Errorf("spec.selector: invalid selector: %w", err)
	}
	return nil
}

// checkSessionAffinity validates sessionAffinity and its config and applies
// the defaults (None; a timeout of 10800 s for ClientIP).
func checkSessionAffinity(s *corev1.ServiceSpec) error {
	switch s.SessionAffinity {
	case "":
		s.SessionAffinity = corev1.ServiceAffinityNone
	case corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP:
	default:
		return fmt.Errorf("spec.sessionAffinity: unsupported session affinity %q: must be None or ClientIP", s.SessionAffinity)
	}
	if s.SessionAffinity == corev1.ServiceAffinityNone {
		if s.SessionAffinityConfig != nil {
			return errors.New("spec.sessionAffinityConfig: only allowed with sessionAffinity ClientIP")
		}
		return nil
	}
	if s.SessionAffinityConfig == nil {
		s.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
	}
	c := s.SessionAffinityConfig
	if c.ClientIP == nil {
		c.ClientIP = &corev1.ClientIPConfig{}
	}
	if c.ClientIP.TimeoutSeconds == nil {
		t := defaultAffinitySeconds
		c.ClientIP.TimeoutSeconds = &t
	}
	if t := *c.ClientIP.TimeoutSeconds; t < 1 || t > maxAffinitySeconds {
		return fmt.Errorf("spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid timeout %d: must be between 1 and %d seconds, inclusive", t, maxAffinitySeconds)
	}
	return nil
}

// LBService converts a Service that passed validation (as DecodeService
// returns it) into what package lb allocates and proxies. Created and
// Assigned are left zero: they come from the store, not from the object.
func LBService(svc *corev1.Service) (lb.Service, error) {
	fail := func(err error) (lb.Service, error) {
		return lb.Service{}, fmt.Errorf("lb service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	s := &svc.Spec
	out := lb.Service{
		Namespace:             svc.Namespace,
		Name:                  svc.Name,
		Type:                  string(s.Type),
		Selector:              s.Selector,
		Pool:                  svc.Annotations[lb.PoolAnnotation],
		ExternalTrafficPolicy: string(s.ExternalTrafficPolicy),
		SessionAffinity:       s.SessionAffinity == corev1.ServiceAffinityClientIP,
	}
	if out.Type == "" {
		out.Type = lb.TypeClusterIP
	}
	cip := s.ClusterIP
	if cip == "" && len(s.ClusterIPs) > 0 {
		cip = s.ClusterIPs[0]
	}
	if cip != "" {
		a, err := parseServiceIP(cip, "10.96.0.10")
		if err != nil {
			return fail(fmt.Errorf("spec.clusterIP: %w", err))
		}
		out.ClusterIP = a
	}
	if s.LoadBalancerIP != "" {
		a, err := parseServiceIP(s.LoadBalancerIP, "192.168.1.240")
		if err != nil {
			return fail(fmt.Errorf("spec.loadBalancerIP: %w", err))
		}
		out.LoadBalancerIP = a
	}
	for i, r := range s.LoadBalancerSourceRanges {
		p, err := parseCIDR(r)
		if err != nil {
			return fail(fmt.Errorf("spec.loadBalancerSourceRanges[%d]: %w", i, err))
		}
		out.SourceRanges = append(out.SourceRanges, p)
	}
	if out.SessionAffinity {
		if c := s.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	for i, p := range s.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return fail(fmt.Errorf("spec.ports[%d].port: invalid port %d", i, p.Port))
		}
		sp := lb.ServicePort{Name: p.Name, Protocol: string(p.Protocol), Port: uint16(p.Port), TargetPort: p.TargetPort}
		if sp.Protocol == "" {
			sp.Protocol = string(corev1.ProtocolTCP)
		}
		if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0 {
			sp.TargetPort = intstr.FromInt32(p.Port)
		}
		out.Ports = append(out.Ports, sp)
	}
	return out, nil
}

// ServicePlace is what the agent knows of a service that its object does
// not carry: the addresses allocated to it and the node announcing its VIP.
// ServiceView puts it into the Service's document.
type ServicePlace struct {
	ClusterIP  string // allocated ClusterIP, "" if none
	ExternalIP string // allocated VIP (LoadBalancer), "" if none
	Owner      string // node announcing the VIP, "" if none
	// Pending is why the service still lacks an address (a full pool, a
	// full service CIDR), "" if it lacks none.
	Pending string
	// Conflict says which address the service asked for or held and lost
	// to an older service (it then has another one), "" if none.
	Conflict string
}

// The cells of a Service's row in Table, read from the document
// ServiceView returns.

func serviceType(s *corev1.Service) string {
	if s.Spec.Type == "" {
		return lb.TypeClusterIP
	}
	return string(s.Spec.Type)
}

// serviceClusterIP is spec.clusterIP, or <pending> when the service has
// none and the agent says why.
func serviceClusterIP(s *corev1.Service) string {
	if s.Spec.ClusterIP == "" && s.Annotations[PendingAnnotation] != "" {
		return pending
	}
	return s.Spec.ClusterIP
}

// serviceExternalIP lists status.loadBalancer.ingress; a LoadBalancer
// service without one that the agent says why of shows <pending>.
func serviceExternalIP(s *corev1.Service) string {
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a := cmp.Or(in.IP, in.Hostname); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 && serviceType(s) == lb.TypeLoadBalancer && s.Annotations[PendingAnnotation] != "" {
		return pending
	}
	return strings.Join(out, ",")
}

// serviceReason says why the service lacks an address and which address it
// lost to an older service.
func serviceReason(s *corev1.Service) string {
	var why []string
	if p := s.Annotations[PendingAnnotation]; p != "" {
		why = append(why, p)
	}
	if c := s.Annotations[ConflictAnnotation]; c != "" {
		why = append(why, "conflict: "+c)
	}
	return strings.Join(why, "; ")
}

// PortsString renders the ports of a service as kubectl does, without node
// ports: "80/TCP,53/UDP", or <none>.
func PortsString(ports []corev1.ServicePort) string {
	if len(ports) == 0 {
		return none
	}
	out := make([]string, len(ports))
	for i, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		out[i] = strconv.Itoa(int(p.Port)) + "/" + string(proto)
	}
	return strings.Join(out, ",")
}
