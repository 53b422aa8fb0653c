package objects

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
//   - type ClusterIP (default), NodePort, LoadBalancer or ExternalName;
//     ExternalName services (spec.externalName, a DNS name) and headless
//     services (clusterIP: None, type ClusterIP only) are accepted and
//     shown, never proxied; ipFamilyPolicy RequireDualStack is rejected;
//   - clusterIP, loadBalancerIP, externalIPs: IP addresses (whether they
//     are free and in range is lb.ValidateApply's question); clusterIPs: at
//     most one entry, equal to clusterIP, which it fills when empty;
//   - ports: at least one (except ExternalName and headless); protocol TCP
//     (default) or UDP; port 1-65535; targetPort a number 1-65535 or an
//     IANA_SVC_NAME, defaulting to port; names DNS labels, required and
//     unique when there are several ports; port and protocol unique;
//     nodePort only with type NodePort or LoadBalancer;
//   - selector: label keys and values;
//   - loadBalancerIP, loadBalancerSourceRanges (CIDRs) and
//     allocateLoadBalancerNodePorts (left out means true) only with type
//     LoadBalancer;
//   - externalTrafficPolicy Cluster or Local, for NodePort and LoadBalancer
//     services and services with externalIPs (default Cluster); dropped
//     elsewhere, where it means nothing; healthCheckNodePort only with
//     LoadBalancer and Local;
//   - internalTrafficPolicy Cluster (the meaning when left out) or Local;
//   - sessionAffinity None (default) or ClientIP; sessionAffinityConfig only
//     with ClientIP, its clientIP.timeoutSeconds 1-86400, default 10800;
//   - the annotation lb.PoolAnnotation, when present: a DNS label (the name
//     of an AddressPool).
//
// Fields netloom does not use (ipFamilies, loadBalancerClass, ...) are kept
// as given, so a Service exported from Kubernetes loads.
func checkServiceSpec(spec any) error {
	ss := spec.(*serviceSpec)
	s := &ss.ServiceSpec

	switch s.Type {
	case "":
		s.Type = corev1.ServiceTypeClusterIP
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		return fmt.Errorf("spec.type: unsupported type %q: must be ClusterIP, NodePort, LoadBalancer or ExternalName", s.Type)
	}
	isLB := s.Type == corev1.ServiceTypeLoadBalancer
	hasNodePorts := isLB || s.Type == corev1.ServiceTypeNodePort

	if s.Type == corev1.ServiceTypeExternalName {
		return checkExternalName(s)
	}
	if s.ExternalName != "" {
		return fmt.Errorf("spec.externalName: only allowed with type ExternalName (this Service is %s)", s.Type)
	}
	if err := checkClusterIPs(s); err != nil {
		return err
	}
	headless := s.ClusterIP == corev1.ClusterIPNone
	if headless && s.Type != corev1.ServiceTypeClusterIP {
		return fmt.Errorf("spec.clusterIP: None (headless) is only allowed with type ClusterIP (this Service is %s)", s.Type)
	}
	if !headless || len(s.Ports) > 0 {
		if err := checkServicePorts(s.Ports); err != nil {
			return err
		}
	}
	for i, p := range s.Ports {
		if p.NodePort != 0 && !hasNodePorts {
			return fmt.Errorf("spec.ports[%d].nodePort: only allowed with type NodePort or LoadBalancer (this Service is %s)", i, s.Type)
		}
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
	if s.AllocateLoadBalancerNodePorts != nil && !isLB {
		return fmt.Errorf("spec.allocateLoadBalancerNodePorts: only allowed with type LoadBalancer (this Service is %s)", s.Type)
	}
	if headless && len(s.ExternalIPs) > 0 {
		return errors.New("spec.externalIPs: not allowed on a headless service (clusterIP: None)")
	}
	if _, err := externalIPs(s.ExternalIPs); err != nil {
		return err
	}

	switch s.ExternalTrafficPolicy {
	case "", corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal:
	default:
		return fmt.Errorf("spec.externalTrafficPolicy: unsupported policy %q: must be Cluster or Local", s.ExternalTrafficPolicy)
	}
	external := hasNodePorts || len(s.ExternalIPs) > 0
	switch {
	case external && s.ExternalTrafficPolicy == "":
		s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	case !external && s.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal:
		return fmt.Errorf("spec.externalTrafficPolicy: Local is only allowed with type NodePort or LoadBalancer, or with externalIPs (this Service is %s)", s.Type)
	case !external:
		s.ExternalTrafficPolicy = "" // Cluster: the only meaning without an external address
	}
	if s.HealthCheckNodePort != 0 {
		if !isLB || s.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			return errors.New("spec.healthCheckNodePort: only allowed with type LoadBalancer and externalTrafficPolicy Local")
		}
		if errs := validation.IsValidPortNum(int(s.HealthCheckNodePort)); len(errs) > 0 {
			return fmt.Errorf("spec.healthCheckNodePort: invalid port %d: %s", s.HealthCheckNodePort, join(errs))
		}
	}
	if p := s.InternalTrafficPolicy; p != nil {
		switch *p {
		case corev1.ServiceInternalTrafficPolicyCluster, corev1.ServiceInternalTrafficPolicyLocal:
		default:
			return fmt.Errorf("spec.internalTrafficPolicy: unsupported policy %q: must be Cluster or Local", *p)
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

// checkExternalName validates an ExternalName service: a DNS name and
// nothing that would give it an address.
func checkExternalName(s *corev1.ServiceSpec) error {
	if s.ExternalName == "" {
		return errors.New("spec.externalName: required with type ExternalName (a DNS name, e.g. db.example.com)")
	}
	if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s.ExternalName, ".")); len(errs) > 0 {
		return fmt.Errorf("spec.externalName: invalid DNS name %q: %s", s.ExternalName, join(errs))
	}
	if s.ClusterIP != "" && s.ClusterIP != corev1.ClusterIPNone || len(s.ClusterIPs) > 0 {
		return errors.New("spec.clusterIP: not allowed with type ExternalName (leave it out)")
	}
	if s.LoadBalancerIP != "" || len(s.ExternalIPs) > 0 {
		return errors.New("spec: loadBalancerIP and externalIPs are not allowed with type ExternalName")
	}
	for i, p := range s.Ports {
		if p.NodePort != 0 {
			return fmt.Errorf("spec.ports[%d].nodePort: not allowed with type ExternalName", i)
		}
	}
	s.ExternalTrafficPolicy = ""
	return nil
}

// externalIPs parses spec.externalIPs: unicast addresses, not loopback,
// link-local or unspecified, without duplicates.
func externalIPs(list []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for i, e := range list {
		a, err := parseServiceIP(e, "192.168.1.50")
		switch {
		case err != nil:
			return nil, fmt.Errorf("spec.externalIPs[%d]: %w", i, err)
		case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsInterfaceLocalMulticast():
			return nil, fmt.Errorf("spec.externalIPs[%d]: %s is not a unicast address a client can reach (use an address routed to the nodes)", i, a)
		case slices.Contains(out, a):
			return nil, fmt.Errorf("spec.externalIPs[%d]: duplicate address %s", i, a)
		}
		out = append(out, a)
	}
	return out, nil
}

// checkClusterIPs checks spec.clusterIP and spec.clusterIPs and fills
// clusterIP from clusterIPs when only the latter is given.
func checkClusterIPs(s *corev1.ServiceSpec) error {
	switch s.ClusterIP {
	case "", corev1.ClusterIPNone:
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
		if s.ClusterIP == "" {
			s.ClusterIP = c
		}
		if s.ClusterIP != c {
			return fmt.Errorf("spec.clusterIPs[0]: None differs from spec.clusterIP %s: they must be the same (or leave clusterIPs out)", s.ClusterIP)
		}
		return nil
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
		PublishNotReady:       s.PublishNotReadyAddresses,
		HealthCheckNodePort:   uint16(s.HealthCheckNodePort),
	}
	if out.Type == "" {
		out.Type = lb.TypeClusterIP
	}
	if p := s.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		out.InternalTrafficPolicy = lb.PolicyLocal
	}
	switch out.Type {
	case lb.TypeNodePort:
		out.NodePorts = true
	case lb.TypeLoadBalancer:
		out.NodePorts = s.AllocateLoadBalancerNodePorts == nil || *s.AllocateLoadBalancerNodePorts
	}
	eips, err := externalIPs(s.ExternalIPs)
	if err != nil {
		return fail(err)
	}
	out.ExternalIPs = eips
	cip := s.ClusterIP
	if cip == "" && len(s.ClusterIPs) > 0 {
		cip = s.ClusterIPs[0]
	}
	if cip == corev1.ClusterIPNone {
		out.Headless = true
		cip = ""
	}
	if out.Type == lb.TypeExternalName {
		cip = ""
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
		if p.NodePort < 0 || p.NodePort > 65535 {
			return fail(fmt.Errorf("spec.ports[%d].nodePort: invalid port %d", i, p.NodePort))
		}
		sp := lb.ServicePort{Name: p.Name, Protocol: string(p.Protocol), Port: uint16(p.Port), TargetPort: p.TargetPort, NodePort: uint16(p.NodePort)}
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
// not carry: the addresses and ports allocated to it and the node
// announcing its VIP. ServiceView puts it into the Service's document.
type ServicePlace struct {
	ClusterIP  string // allocated ClusterIP, "" if none
	ExternalIP string // allocated VIP (LoadBalancer), "" if none
	Owner      string // node announcing the VIP, "" if none
	// NodePorts are the allocated node ports, same index as spec.ports
	// (0: none yet); nil when the service has none.
	NodePorts []uint16
	// HealthCheckNodePort is the allocated health-check port, 0 if none.
	HealthCheckNodePort uint16
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
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		return none
	case s.Spec.ClusterIP == "" && s.Annotations[PendingAnnotation] != "":
		return pending
	}
	return s.Spec.ClusterIP
}

// serviceExternalIP lists status.loadBalancer.ingress; a LoadBalancer
// service without one that the agent says why of shows <pending>.
func serviceExternalIP(s *corev1.Service) string {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return s.Spec.ExternalName
	}
	out := slices.Clone(s.Spec.ExternalIPs)
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
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		why = append(why, "not proxied: an ExternalName service is a DNS name only")
	case s.Spec.ClusterIP == corev1.ClusterIPNone:
		why = append(why, "not proxied: a headless service (clusterIP: None) has endpoints only")
	}
	if p := s.Annotations[PendingAnnotation]; p != "" {
		why = append(why, p)
	}
	if c := s.Annotations[ConflictAnnotation]; c != "" {
		why = append(why, "conflict: "+c)
	}
	return strings.Join(why, "; ")
}

// PortsString renders the ports of a service as kubectl does, with their
// node ports: "80/TCP,53:30053/UDP", or <none>.
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
		out[i] = strconv.Itoa(int(p.Port))
		if p.NodePort != 0 {
			out[i] += ":" + strconv.Itoa(int(p.NodePort))
		}
		out[i] += "/" + string(proto)
	}
	return strings.Join(out, ",")
}
