package manifests

import (
	"context"
	"fmt"
	"testing"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apiextensions-apiserver/pkg/crdserverscheme"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// This file runs the API server's own code on the CRD: the validation of
// the CustomResourceDefinition itself (structural schema, CEL compilation
// and cost limits), and the path a created AddressPool takes (pruning,
// defaulting, OpenAPI schema, list sets, CEL rules).

// internalCRD defaults crd as the API server does and converts it to the
// internal version its validation works on.
func internalCRD(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) *apiextensionsinternal.CustomResourceDefinition {
	t.Helper()
	crd = crd.DeepCopy()
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	var out apiextensionsinternal.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, &out, nil); err != nil {
		t.Fatalf("convert CRD to internal: %v", err)
	}
	return &out
}

// validateCRD is what the API server says to `kubectl apply` of crd.
func validateCRD(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) field.ErrorList {
	t.Helper()
	return crdvalidation.ValidateCustomResourceDefinition(context.Background(), internalCRD(t, crd))
}

// poolServer validates AddressPools as the API server serving the CRD
// would on create.
type poolServer struct {
	structural *structuralschema.Structural
	validate   func(u *unstructured.Unstructured) field.ErrorList
}

func newPoolServer(t *testing.T) *poolServer {
	t.Helper()
	crd := internalCRD(t, AddressPoolCRD())
	// The conversion moves a schema all versions share to spec.validation.
	if crd.Spec.Validation == nil || crd.Spec.Validation.OpenAPIV3Schema == nil {
		t.Fatal("internal CRD has no spec.validation")
	}
	schema := crd.Spec.Validation.OpenAPIV3Schema
	structural, err := structuralschema.NewStructural(schema)
	if err != nil {
		t.Fatalf("structural schema: %v", err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(schema)
	if err != nil {
		t.Fatalf("schema validator: %v", err)
	}
	strategy := customresource.NewStrategy(crdserverscheme.NewUnstructuredObjectTyper(), false, AddressPoolGVK,
		validator, nil, structural, nil, nil, nil)
	return &poolServer{
		structural: structural,
		validate: func(u *unstructured.Unstructured) field.ErrorList {
			return strategy.Validate(context.Background(), u)
		},
	}
}

// create decodes one YAML document, prunes and defaults it, and validates
// it. It returns the object as it would be stored.
func (s *poolServer) create(doc string) (*unstructured.Unstructured, field.ErrorList, error) {
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return nil, nil, fmt.Errorf("YAML: %w", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		return nil, nil, fmt.Errorf("decode: %w", err)
	}
	structuralpruning.Prune(u.Object, s.structural, true)
	structuraldefaulting.Default(u.Object, s.structural)
	return u, s.validate(u), nil
}
