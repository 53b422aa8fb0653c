package objects

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DecodePod decodes a normalized Pod (Object.JSON of kind Pod).
func DecodePod(raw json.RawMessage) (*corev1.Pod, error) {
	var p corev1.Pod
	if err := decodeStored(raw, "Pod", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// decodeStored decodes a stored object of the given kind into v.
func decodeStored(raw json.RawMessage, kind string, v any) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return fmt.Errorf("decode %s: %w", kind, err)
	}
	if tm.Kind != kind {
		return fmt.Errorf("decode %s: object is of kind %q", kind, tm.Kind)
	}
	if err := decodeTyped(raw, v); err != nil {
		return fmt.Errorf("decode %s: %w", kind, err)
	}
	return nil
}

func decodePodDoc(doc []byte) (*metav1.ObjectMeta, any, error) {
	if err := checkQuantities(doc); err != nil {
		return nil, nil, err
	}
	var p corev1.Pod
	if err := decodeTyped(doc, &p); err != nil {
		return nil, nil, err
	}
	return &p.ObjectMeta, &p.Spec, nil
}

// checkQuantities finds a malformed resource quantity before the typed
// decode does, because resource.Quantity's decoder does not say where.
func checkQuantities(doc []byte) error {
	type res struct {
		Limits   map[string]json.RawMessage `json:"limits"`
		Requests map[string]json.RawMessage `json:"requests"`
	}
	type ctr struct {
		Resources res `json:"resources"`
	}
	var p struct {
		Spec struct {
			Containers     []ctr                      `json:"containers"`
			InitContainers []ctr                      `json:"initContainers"`
			Overhead       map[string]json.RawMessage `json:"overhead"`
			Resources      *res                       `json:"resources"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(doc, &p); err != nil {
		return nil // shapes are wrong: the typed decode reports it
	}
	check := func(path string, m map[string]json.RawMessage) error {
		for _, k := range sortedKeys(m) {
			var q resource.Quantity
			if err := json.Unmarshal(m[k], &q); err != nil {
				return fmt.Errorf("%s[%s]: invalid quantity %s (use a number with an optional suffix, e.g. 250m, 2, 128Mi, 1Gi)", path, k, m[k])
			}
		}
		return nil
	}
	for _, list := range []struct {
		name string
		ctrs []ctr
	}{{"spec.containers", p.Spec.Containers}, {"spec.initContainers", p.Spec.InitContainers}} {
		for i, c := range list.ctrs {
			prefix := fmt.Sprintf("%s[%d].resources", list.name, i)
			if err := check(prefix+".limits", c.Resources.Limits); err != nil {
				return err
			}
			if err := check(prefix+".requests", c.Resources.Requests); err != nil {
				return err
			}
		}
	}
	if err := check("spec.overhead", p.Spec.Overhead); err != nil {
		return err
	}
	if r := p.Spec.Resources; r != nil {
		if err := check("spec.resources.limits", r.Limits); err != nil {
			return err
		}
		if err := check("spec.resources.requests", r.Requests); err != nil {
			return err
		}
	}
	return nil
}

// checkPodSpec validates the parts of a pod spec netloom uses (container
// ports, which Services and NetworkPolicies refer to) and defaults the port
// protocol to TCP.
func checkPodSpec(spec any) error {
	s := spec.(*corev1.PodSpec)
	names := map[string]string{} // port name -> path where first seen
	for _, list := range []struct {
		name string
		ctrs []corev1.Container
	}{{"spec.containers", s.Containers}, {"spec.initContainers", s.InitContainers}} {
		for i := range list.ctrs {
			for j := range list.ctrs[i].Ports {
				path := fmt.Sprintf("%s[%d].ports[%d]", list.name, i, j)
				if err := checkPort(path, &list.ctrs[i].Ports[j], names); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkPort(path string, p *corev1.ContainerPort, names map[string]string) error {
	if p.Name != "" {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			return fmt.Errorf("%s.name: invalid port name %q: %s", path, p.Name, join(errs))
		}
		if first, dup := names[p.Name]; dup {
			return fmt.Errorf("%s.name: duplicate port name %q (also %s)", path, p.Name, first)
		}
		names[p.Name] = path
	}
	if errs := validation.IsValidPortNum(int(p.ContainerPort)); len(errs) > 0 {
		return fmt.Errorf("%s.containerPort: invalid port %d: %s", path, p.ContainerPort, join(errs))
	}
	if p.HostPort != 0 {
		if errs := validation.IsValidPortNum(int(p.HostPort)); len(errs) > 0 {
			return fmt.Errorf("%s.hostPort: invalid port %d: %s", path, p.HostPort, join(errs))
		}
	}
	switch p.Protocol {
	case "":
		p.Protocol = corev1.ProtocolTCP
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return fmt.Errorf("%s.protocol: unsupported protocol %q: must be TCP, UDP or SCTP", path, p.Protocol)
	}
	return nil
}

// podReadiness keeps the one part of a Pod's status netloom reads: its
// Ready condition, which decides (with metadata.deletionTimestamp) whether
// the pod's endpoints take new connections, as Kubernetes' EndpointSlice
// controller decides. nil when the pod has no Ready condition.
func podReadiness(doc []byte) any {
	var p corev1.Pod
	if decodeTyped(doc, &p) != nil {
		return nil
	}
	type cond struct {
		Type   corev1.PodConditionType `json:"type"`
		Status corev1.ConditionStatus  `json:"status"`
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return struct {
				Conditions []cond `json:"conditions"`
			}{[]cond{{c.Type, c.Status}}}
		}
	}
	return nil
}

// PodConditions says whether a stored pod is ready (no Ready condition
// counts as ready: netloom's own pods are ready once they have an address)
// and whether it is terminating (metadata.deletionTimestamp is set).
func PodConditions(p *corev1.Pod) (ready, terminating bool) {
	ready = true
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	return ready, p.DeletionTimestamp != nil
}
