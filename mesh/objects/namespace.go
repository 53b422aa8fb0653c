package objects

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DecodeNamespace decodes a normalized Namespace (Object.JSON of kind
// Namespace).
func DecodeNamespace(raw json.RawMessage) (*corev1.Namespace, error) {
	var ns corev1.Namespace
	if err := decodeStored(raw, "Namespace", &ns); err != nil {
		return nil, err
	}
	return &ns, nil
}

func decodeNamespaceDoc(doc []byte) (*metav1.ObjectMeta, any, error) {
	var ns corev1.Namespace
	if err := decodeTyped(doc, &ns); err != nil {
		return nil, nil, err
	}
	if len(ns.Spec.Finalizers) == 0 {
		return &ns.ObjectMeta, nil, nil // no spec in the stored form
	}
	return &ns.ObjectMeta, &ns.Spec, nil
}
