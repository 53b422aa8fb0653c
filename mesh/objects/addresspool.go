package objects

import (
	"encoding/json"
	"errors"

	"github.com/netloom/netloom/lb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AddressPoolAPIVersion is the apiVersion of netloom's own kinds.
const AddressPoolAPIVersion = "netloom.io/v1alpha1"

// AddressPool is netloom's address-pool kind (apiVersion
// netloom.io/v1alpha1, cluster scoped): the addresses LoadBalancer services
// get their VIPs from. A Service picks one by name with the annotation
// lb.PoolAnnotation.
type AddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AddressPoolSpec `json:"spec"`
}

// AddressPoolSpec is the spec of an AddressPool.
type AddressPoolSpec struct {
	// Addresses are CIDRs ("192.168.1.240/28"), ranges
	// ("192.168.1.240-192.168.1.250") and single addresses; at least one.
	// See lb.ParseRange.
	Addresses []string `json:"addresses,omitempty"`
	// AutoAssign: whether services that name no pool and ask for no address
	// get VIPs from this pool. nil means true.
	AutoAssign *bool `json:"autoAssign,omitempty"`
}

// autoAssign returns spec.autoAssign with its default (true).
func (s *AddressPoolSpec) autoAssign() bool { return s.AutoAssign == nil || *s.AutoAssign }

// DecodeAddressPool decodes a normalized AddressPool (Object.JSON of kind
// AddressPool).
func DecodeAddressPool(raw json.RawMessage) (*AddressPool, error) {
	var p AddressPool
	if err := decodeStored(raw, lb.PoolKind, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// LBPool converts the pool into what package lb allocates from. It fails,
// with an *lb.FieldError, only for a pool that did not pass validation.
func (p *AddressPool) LBPool() (lb.Pool, error) {
	return lb.ParsePool(p.Name, p.Spec.Addresses, p.Spec.autoAssign())
}

func decodeAddressPoolDoc(doc []byte) (*metav1.ObjectMeta, any, error) {
	var p AddressPool
	if err := decodeTyped(doc, &p); err != nil {
		return nil, nil, err
	}
	return &p.ObjectMeta, &p.Spec, nil
}

// checkAddressPoolSpec validates the addresses of a pool with lb.ParsePool
// (syntax, at least one entry, no two entries overlapping; overlaps with
// other pools and the cluster CIDR are lb.ValidateApply's) and defaults
// autoAssign to true.
func checkAddressPoolSpec(spec any) error {
	s := spec.(*AddressPoolSpec)
	if s.AutoAssign == nil {
		t := true
		s.AutoAssign = &t
	}
	if _, err := lb.ParsePool("", s.Addresses, *s.AutoAssign); err != nil {
		return fieldError(err)
	}
	return nil
}

// lbFieldError is an *lb.FieldError in the form a DocumentError carries:
// "field: problem" (the document error names the object).
type lbFieldError struct{ fe *lb.FieldError }

func (e lbFieldError) Error() string { return e.fe.Field + ": " + e.fe.Msg }
func (e lbFieldError) Unwrap() error { return e.fe }

// fieldError turns an *lb.FieldError into an error for a DocumentError,
// still matching errors.As(err, **lb.FieldError); other errors are returned
// as they are.
func fieldError(err error) error {
	var fe *lb.FieldError
	if errors.As(err, &fe) {
		return lbFieldError{fe}
	}
	return err
}
