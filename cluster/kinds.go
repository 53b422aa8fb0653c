package cluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
)

// The kinds the agent writes itself; users write the kinds of mesh/objects
// (Namespace, Pod, Service, NetworkPolicy, AddressPool). Each has one
// typed codec here, the only place its JSON form is read or written.
const (
	KindLease      = ipam.LeaseKind    // a node's claim on a pod subnet, named by node
	KindPodAddress = "PodAddress"      // where a pod attached, named by pod
	KindAssignment = lb.AssignmentKind // the addresses a service holds, named by service

	KindService = "Service" // a user's Service (mesh/objects), which an assignment is of
)

// PodAddress records where a pod attached: written by the node that ran CNI
// ADD, read by every node (policies and services need pod addresses).
type PodAddress struct {
	Node        string `json:"node"`
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// UID is the Kubernetes pod's UID when the runtime passed it: an
	// address is the pod's only while the UIDs agree.
	UID string `json:"uid,omitempty"`
}

// Codec reads and writes one agent-written kind of the store.
type Codec[T any] struct {
	Kind string
	// key names the store entry of a value.
	key func(T) store.Key
	// check validates a decoded value against its key.
	check func(store.Key, T) error
}

// Leases is the codec of subnet leases (key: the node's name).
var Leases = Codec[ipam.Lease]{
	Kind: KindLease,
	key:  func(l ipam.Lease) store.Key { return store.Key{Kind: KindLease, Name: l.Node} },
	check: func(k store.Key, l ipam.Lease) error {
		if l.Node != k.Name {
			return fmt.Errorf("lease of %q stored under %q", l.Node, k.Name)
		}
		return nil
	},
}

// PodAddresses is the codec of pod attachments (key: the pod's namespace
// and name).
var PodAddresses = Codec[PodAddress]{
	Kind: KindPodAddress,
	check: func(_ store.Key, p PodAddress) error {
		if _, err := netip.ParseAddr(p.IP); err != nil {
			return fmt.Errorf("pod address %q: %w", p.IP, err)
		}
		return nil
	},
}

// Assignments is the codec of service address assignments (key: the
// service's namespace and name).
var Assignments = Codec[lb.Assignment]{Kind: KindAssignment}

// Decode reads the value of an entry of the codec's kind.
func (c Codec[T]) Decode(e store.Entry) (T, error) {
	var v T
	if e.Key.Kind != c.Kind {
		return v, fmt.Errorf("decode %s: entry is a %s", c.Kind, e.Key.Kind)
	}
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return v, fmt.Errorf("decode %s %s: %w", c.Kind, e.Key.Name, err)
	}
	if c.check != nil {
		if err := c.check(e.Key, v); err != nil {
			return v, fmt.Errorf("decode %s: %w", c.Kind, err)
		}
	}
	return v, nil
}

// Put is the store write of v; k is its key when the codec does not derive
// keys from values.
func (c Codec[T]) Put(k store.Key, v T) (store.Put, error) {
	if c.key != nil {
		k = c.key(v)
	}
	k.Kind = c.Kind
	b, err := json.Marshal(v)
	if err != nil {
		return store.Put{}, fmt.Errorf("encode %s %s: %w", c.Kind, k.Name, err)
	}
	return store.Put{Key: k, Value: b}, nil
}

// List decodes every live entry of the kind; entries that do not decode
// are skipped.
func (c Codec[T]) List(s *store.Store, namespace string) []Keyed[T] {
	var out []Keyed[T]
	for _, e := range s.List(c.Kind, namespace) {
		if v, err := c.Decode(e); err == nil {
			out = append(out, Keyed[T]{Key: e.Key, Value: v})
		}
	}
	return out
}

// Keyed is a decoded value with its store key.
type Keyed[T any] struct {
	Key   store.Key
	Value T
}

// CreatedAnnotation records when and where a Service was first applied; it
// orders services in address conflicts (older wins) and is kept on updates.
const CreatedAnnotation = "netloom.io/created"

// parseCreated reads CreatedAnnotation ("<unix ms>@<node>"); without it the
// store version of the object stands in.
func parseCreated(s string, v store.Version) lb.Version {
	if ms, node, ok := strings.Cut(s, "@"); ok {
		if wall, err := strconv.ParseInt(ms, 10, 64); err == nil {
			return lb.Version{Wall: wall, Node: node}
		}
	}
	return lb.Version{Wall: v.Wall, Logical: v.Logical, Node: v.Node}
}

// DecodeService is a stored Service as load balancing sees it.
func DecodeService(e store.Entry) (lb.Service, error) {
	svc, err := objects.DecodeService(e.Value)
	if err != nil {
		return lb.Service{}, err
	}
	s, err := objects.LBService(svc)
	if err != nil {
		return lb.Service{}, err
	}
	s.Created = parseCreated(svc.Annotations[CreatedAnnotation], e.Version)
	return s, nil
}

// DecodePool is a stored AddressPool as load balancing sees it.
func DecodePool(e store.Entry) (lb.Pool, error) {
	ap, err := objects.DecodeAddressPool(e.Value)
	if err != nil {
		return lb.Pool{}, err
	}
	return ap.LBPool()
}
