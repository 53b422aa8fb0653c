package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
)

// totalAnnotationSizeLimit is Kubernetes' limit on the sum of the sizes of
// all annotation keys and values.
const totalAnnotationSizeLimit = 256 * 1024

// checkMeta validates metadata the same way for every kind.
func checkMeta(def *kindDef, name, ns string, labels, annotations map[string]string) error {
	if name == "" {
		return errors.New("metadata.name: required")
	}
	if errs := def.validName(name); len(errs) > 0 {
		return fmt.Errorf("metadata.name: invalid name %q: %s", name, join(errs))
	}
	if def.Namespaced && ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("metadata.namespace: invalid namespace %q: %s", ns, join(errs))
		}
	}
	for _, k := range sortedKeys(labels) {
		if errs := content.IsLabelKey(k); len(errs) > 0 {
			return fmt.Errorf("metadata.labels: invalid label key %q: %s", k, join(errs))
		}
		if errs := content.IsLabelValue(labels[k]); len(errs) > 0 {
			return fmt.Errorf("metadata.labels: invalid label value %q: %s", labels[k], join(errs))
		}
	}
	size := 0
	for _, k := range sortedKeys(annotations) {
		if errs := content.IsLabelKey(strings.ToLower(k)); len(errs) > 0 {
			return fmt.Errorf("metadata.annotations: invalid annotation key %q: %s", k, join(errs))
		}
		size += len(k) + len(annotations[k])
	}
	if size > totalAnnotationSizeLimit {
		return fmt.Errorf("metadata.annotations: too long: %d bytes, must have at most %d bytes", size, totalAnnotationSizeLimit)
	}
	return nil
}

func join(errs []string) string { return strings.Join(errs, "; ") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// decodeTyped decodes doc into v the way the Kubernetes API server does:
// field names are case sensitive, unknown fields are ignored, duplicate
// fields and values of the wrong type are errors. Errors name the field.
func decodeTyped(doc []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(doc, v, kjson.DisallowDuplicateFields)
	if err != nil {
		return typeError(doc, err)
	}
	if len(strict) > 0 {
		e := strict[0]
		var fe kjson.FieldError
		if errors.As(e, &fe) {
			return fmt.Errorf("%s: duplicate field", strings.TrimPrefix(fe.FieldPath(), "."))
		}
		return e
	}
	return nil
}

// typeError rewrites a decoding error as "field: problem".
func typeError(doc []byte, err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err
	}
	path := locate(doc, te)
	want := typeName(te.Type)
	got := te.Value
	switch {
	case got == "array":
		got = "list"
	case got == "bool":
		got = "boolean"
	case strings.HasPrefix(got, "number"):
		got = "number"
	}
	msg := fmt.Sprintf("expected %s, got %s", want, got)
	if want == "string" && (got == "number" || got == "boolean") {
		msg += " (quote the value)"
	}
	if path == "" {
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %s", path, msg)
}

func typeName(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return t.String()
}

// segment is one step of a path into a JSON document: an object key or a
// list index.
type segment struct {
	key   string
	index int
	list  bool
}

// fieldPath merges the segments of the value where decoding failed with the
// decoder's field path (struct field names only, e.g.
// "spec.containers.ports.containerPort") into a path with list indices and
// map keys: "spec.containers[0].ports[1].containerPort",
// "metadata.labels[app]". It fails when the two do not agree.
func fieldPath(segs []segment, field string) (string, bool) {
	var names []string
	for _, n := range strings.Split(field, ".") {
		// Skip the Go names of embedded structs (ProbeHandler in
		// "spec.containers.livenessProbe.ProbeHandler.tcpSocket.port"):
		// JSON names of Kubernetes types start lower case.
		if n != "" && !unicode.IsUpper(rune(n[0])) {
			names = append(names, n)
		}
	}
	if segs == nil {
		return strings.Join(names, "."), false
	}
	var b strings.Builder
	for _, s := range segs {
		switch {
		case s.list:
			b.WriteString("[" + strconv.Itoa(s.index) + "]")
		case len(names) > 0 && names[0] == s.key:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
			names = names[1:]
		case len(names) == 0:
			b.WriteString("[" + s.key + "]") // a key of a map
		default:
			return "", false
		}
	}
	return b.String(), len(names) == 0
}

// walk calls fn for every value of doc, in order, with the path to the
// value, its JSON type ("object", "array", "string", "number", "bool",
// "null") and the input offset just after the value's first token (the end
// of a scalar, the opening bracket of an object or list). It stops when fn
// returns true. path is walk's own, valid only during the call: it is kept
// up to date, not copied for every value, so that a deeply nested document
// costs time in proportion to its length, not to length times depth.
func walk(doc []byte, fn func(path []segment, typ string, end int64) bool) {
	var path []segment
	var haveKey []bool // per frame of an object: path's key is the current value's
	// done is called after a complete value in the innermost frame.
	done := func() {
		if n := len(path); n > 0 {
			if path[n-1].list {
				path[n-1].index++
			} else {
				haveKey[n-1] = false
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		n := len(path)
		if s, ok := tok.(string); ok && n > 0 && !path[n-1].list && !haveKey[n-1] {
			path[n-1].key, haveKey[n-1] = s, true
			continue
		}
		var typ string
		switch tok.(type) {
		case json.Delim:
			switch tok {
			case json.Delim('{'), json.Delim('['):
				typ = "object"
				if tok == json.Delim('[') {
					typ = "array"
				}
				if fn(path, typ, dec.InputOffset()) {
					return
				}
				path = append(path, segment{list: tok == json.Delim('[')})
				haveKey = append(haveKey, false)
			default:
				path, haveKey = path[:n-1], haveKey[:n-1]
				done()
			}
			continue
		case string:
			typ = "string"
		case json.Number:
			typ = "number"
		case bool:
			typ = "bool"
		default:
			typ = "null"
		}
		if fn(path, typ, dec.InputOffset()) {
			return
		}
		done()
	}
}

// locate finds the path, with list indices and map keys, of the value a
// json.UnmarshalTypeError is about.
func locate(doc []byte, te *json.UnmarshalTypeError) string {
	want := strings.Fields(te.Value + " ?")[0] // "number -5" -> "number"
	var found string
	// The offset is exact for errors of the decoder itself.
	walk(doc, func(path []segment, typ string, end int64) bool {
		if end < te.Offset {
			return false
		}
		if p, ok := fieldPath(path, te.Field); ok && typ == want {
			found = p
		}
		return true
	})
	if found != "" {
		return found
	}
	// Errors from a type's own UnmarshalJSON (intstr.IntOrString) carry an
	// offset into the value only: take the first value of the wrong type at
	// the field.
	walk(doc, func(path []segment, typ string, _ int64) bool {
		if typ != want {
			return false
		}
		if p, ok := fieldPath(path, te.Field); ok {
			found = p
			return true
		}
		return false
	})
	if found != "" {
		return found
	}
	p, _ := fieldPath(nil, te.Field)
	return p
}
