package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Object is one validated object in normalized form.
type Object struct {
	Kind      string // canonical kind, e.g. "Pod"
	Namespace string // "" for cluster-scoped kinds (Namespace)
	Name      string
	// JSON is the normalized object: apiVersion, kind, metadata (name,
	// namespace, labels, annotations) and spec, with defaults applied.
	JSON json.RawMessage
}

// String names the object the way error messages do: "Pod default/web",
// "Namespace team-a".
func (o Object) String() string { return describe(o.Kind, o.Namespace, o.Name) }

// DocumentError is the error Parse returns for the first invalid document.
// Its message is a single line.
type DocumentError struct {
	Doc  int // 1-based index of the document in the file (empty documents are not counted)
	Item int // 1-based index of the item inside a List document; 0 when not in a List
	Line int // line of the file where the document starts (YAML input); 0 when unknown

	// What is known about the object; any may be "".
	Kind, Namespace, Name string

	Err error
}

func (e *DocumentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", e.Doc)
	if e.Item > 0 {
		fmt.Fprintf(&b, ", item %d", e.Item)
	}
	if e.Kind != "" {
		fmt.Fprintf(&b, " (%s)", describe(e.Kind, e.Namespace, e.Name))
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return oneLine(b.String())
}

func (e *DocumentError) Unwrap() error { return e.Err }

// where returns "document 3" or "document 1, item 2".
func (e *DocumentError) where() string {
	if e.Item > 0 {
		return fmt.Sprintf("document %d, item %d", e.Doc, e.Item)
	}
	return fmt.Sprintf("document %d", e.Doc)
}

func describe(kind, ns, name string) string {
	switch {
	case kind == "":
		return ""
	case name == "":
		return kind
	case ns == "":
		return kind + " " + name
	default:
		return kind + " " + ns + "/" + name
	}
}

var spaces = regexp.MustCompile(`\s*\n\s*`)

// oneLine folds a possibly multi-line message into one line.
func oneLine(s string) string {
	return spaces.ReplaceAllString(strings.TrimSpace(s), "; ")
}

// Parse reads a manifest: multi-document YAML, or JSON (a single object, a
// stream of objects, an array of objects) and, in either, `kind: List`
// documents whose items are the objects. Empty and comment-only documents
// are skipped. It returns the objects in file order, or, for the first
// invalid document, nothing and a *DocumentError. A manifest without any
// object yields no objects and no error.
func Parse(data []byte) ([]Object, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	p := &parser{seen: map[objKey]string{}}
	var err error
	if looksJSON(data) {
		err = p.parseJSON(data)
	} else {
		err = p.parseYAML(data)
	}
	if err != nil {
		return nil, err
	}
	return p.objs, nil
}

// FromJSON validates and normalizes objects that are already JSON (e.g. the
// body of an apply request), all-or-nothing like Parse. Document i+1 in an
// error is objs[i].
func FromJSON(objs []json.RawMessage) ([]Object, error) {
	p := &parser{seen: map[objKey]string{}}
	for _, raw := range objs {
		p.doc++
		if err := p.document(raw, 0); err != nil {
			return nil, err
		}
	}
	return p.objs, nil
}

type objKey struct{ kind, ns, name string }

type parser struct {
	doc  int // index of the current document (1-based once started)
	line int // first line of the current document (YAML)
	objs []Object
	seen map[objKey]string // -> where it was first seen ("document 1")
}

func (p *parser) fail(item int, kind, ns, name string, err error) *DocumentError {
	return &DocumentError{Doc: p.doc, Item: item, Line: p.line, Kind: kind, Namespace: ns, Name: name, Err: err}
}

// looksJSON reports whether data is JSON rather than YAML: it starts with
// '{' or '[' and has no YAML document separator.
func looksJSON(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return false
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if isSeparator(l) {
			return false
		}
	}
	return true
}

// isSeparator reports whether line is a YAML document separator: "---",
// optionally followed by blanks and a comment.
func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(line[3:])
	if len(rest) == 0 || rest[0] == '#' {
		return true
	}
	return false
}

func (p *parser) parseYAML(data []byte) error {
	var cur []byte
	start := 1 // line of the file where cur starts
	for i, l := range bytes.SplitAfter(data, []byte("\n")) {
		if isSeparator(bytes.TrimRight(l, "\r\n")) {
			if err := p.yamlDoc(cur, start); err != nil {
				return err
			}
			cur, start = nil, i+2
			continue
		}
		cur = append(cur, l...)
	}
	return p.yamlDoc(cur, start)
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// yamlDoc handles one YAML document that starts at line first of the file.
func (p *parser) yamlDoc(doc []byte, first int) error {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		p.doc++
		p.line = first
		return p.fail(0, "", "", "", fmt.Errorf("invalid YAML: %s", yamlMessage(err, doc, first)))
	}
	if isNull(j) {
		return nil // comment-only document
	}
	p.doc++
	p.line = first
	if bytes.HasPrefix(bytes.TrimSpace(j), []byte("[")) {
		return p.fail(0, "", "", "", errors.New("expected an object with apiVersion and kind, got a list (separate documents with ---)"))
	}
	return p.document(j, 0)
}

// yamlMessage turns a YAML parser error into one line with line numbers of
// the whole file.
func yamlMessage(err error, doc []byte, first int) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:")
	msg = yamlLine.ReplaceAllStringFunc(msg, func(s string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
		return "line " + strconv.Itoa(n+first-1)
	})
	msg = oneLine(msg)
	// Tabs in indentation give errors that do not say so, some without a
	// position.
	tab := 0
	for i, l := range bytes.Split(doc, []byte("\n")) {
		if bytes.HasPrefix(bytes.TrimLeft(l, " "), []byte("\t")) {
			tab = first + i
			break
		}
	}
	if tab > 0 && !yamlLine.MatchString(msg) {
		msg = fmt.Sprintf("line %d: %s", tab, msg)
	}
	if tab > 0 && strings.Contains(msg, "cannot start any token") {
		msg += " (indent with spaces, not tabs)"
	}
	return msg
}

func isNull(j []byte) bool {
	t := bytes.TrimSpace(j)
	return len(t) == 0 || string(t) == "null"
}

func (p *parser) parseJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			p.doc++
			return p.fail(0, "", "", "", fmt.Errorf("invalid JSON: %s", jsonMessage(err, data, dec.InputOffset())))
		}
		if !bytes.HasPrefix(v, []byte("[")) {
			if isNull(v) {
				continue
			}
			p.doc++
			if err := p.document(v, 0); err != nil {
				return err
			}
			continue
		}
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			p.doc++
			return p.fail(0, "", "", "", fmt.Errorf("invalid JSON: %w", err))
		}
		for _, it := range items {
			p.doc++
			if err := p.document(it, 0); err != nil {
				return err
			}
		}
	}
}

// jsonMessage adds the line and column to a JSON syntax error.
func jsonMessage(err error, data []byte, fallback int64) string {
	off := fallback
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	msg := err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) {
		msg, off = "unexpected end of input", int64(len(bytes.TrimRight(data, " \t\r\n")))
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	if col < 1 {
		col = 1
	}
	return fmt.Sprintf("line %d, column %d: %s", line, col, msg)
}

// document handles one JSON document (item > 0: the item-th item of a List).
func (p *parser) document(j []byte, item int) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil || top == nil {
		return p.fail(item, "", "", "", fmt.Errorf("expected an object with apiVersion and kind, got %s", jsonType(j)))
	}
	var peek struct {
		Metadata struct {
			Name, Namespace string
		}
	}
	_ = json.Unmarshal(top["metadata"], &peek.Metadata) // best effort, for messages only
	name, ns := peek.Metadata.Name, peek.Metadata.Namespace

	kind, ok := stringField(top, "kind")
	if !ok || kind == "" {
		return p.fail(item, "", "", "", fmt.Errorf("kind: required (netloom accepts %s)", strings.Join(kindNames(), ", ")))
	}
	if isList(kind) {
		if item > 0 {
			return p.fail(item, kind, "", "", errors.New("a List inside a List is not supported"))
		}
		return p.list(kind, top)
	}
	def, ok := lookup(kind)
	if !ok {
		return p.fail(item, "", "", "", fmt.Errorf("unknown kind %q (netloom accepts %s)", kind, strings.Join(kindNames(), ", ")))
	}
	if def.Namespaced && ns == "" {
		ns = metav1.NamespaceDefault
	}
	if !def.Namespaced {
		ns = ""
	}
	fail := func(err error) error { return p.fail(item, kind, ns, name, err) }

	apiVersion, ok := stringField(top, "apiVersion")
	if !ok || apiVersion == "" {
		return fail(fmt.Errorf("apiVersion: required (use %s)", def.APIVersions[0]))
	}
	if !contains(def.APIVersions, apiVersion) {
		return fail(fmt.Errorf("apiVersion: %q is not supported for kind %s (use %s)", apiVersion, kind, strings.Join(def.APIVersions, " or ")))
	}

	meta, spec, err := def.decode(j)
	if err != nil {
		return fail(err)
	}
	name = meta.Name
	if def.Namespaced {
		ns = meta.Namespace
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
	}
	if meta.Name == "" && meta.GenerateName != "" {
		return fail(errors.New("metadata.name: required (netloom does not support generateName)"))
	}
	if err := checkMeta(def, meta.Name, meta.Namespace, meta.Labels, meta.Annotations); err != nil {
		return fail(err)
	}
	if def.check != nil {
		if err := def.check(spec); err != nil {
			return fail(err)
		}
	}
	var status any
	if def.status != nil {
		status = def.status(j)
	}
	out, err := json.Marshal(normalized{
		APIVersion: apiVersion,
		Kind:       kind,
		Metadata: normMeta{
			Name:              name,
			Namespace:         ns,
			Labels:            meta.Labels,
			Annotations:       dropAnnotations(meta.Annotations),
			DeletionTimestamp: meta.DeletionTimestamp,
		},
		Spec:   spec,
		Status: status,
	})
	if err != nil {
		return fail(fmt.Errorf("encode: %w", err))
	}

	e := p.fail(item, kind, ns, name, nil)
	k := objKey{kind, ns, name}
	if first, dup := p.seen[k]; dup {
		return fail(fmt.Errorf("duplicate of %s (same kind, namespace and name)", first))
	}
	p.seen[k] = e.where()
	p.objs = append(p.objs, Object{Kind: kind, Namespace: ns, Name: name, JSON: out})
	return nil
}

// list expands a List document ("List", or "<Kind>List" whose items may
// omit kind and apiVersion).
func (p *parser) list(kind string, top map[string]json.RawMessage) error {
	var items []json.RawMessage
	if raw, ok := top["items"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &items); err != nil {
			return p.fail(0, kind, "", "", fmt.Errorf("items: expected a list, got %s", jsonType(raw)))
		}
	}
	itemKind := strings.TrimSuffix(kind, "List")
	def, typed := lookup(itemKind)
	for i, it := range items {
		if typed {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(it, &m); err == nil {
				changed := false
				if _, ok := m["kind"]; !ok {
					m["kind"], _ = json.Marshal(def.Kind)
					changed = true
				}
				if _, ok := m["apiVersion"]; !ok {
					m["apiVersion"], _ = json.Marshal(def.APIVersions[0])
					changed = true
				}
				if changed {
					it, _ = json.Marshal(m)
				}
			}
		}
		if err := p.document(it, i+1); err != nil {
			return err
		}
	}
	return nil
}

func isList(kind string) bool {
	if kind == "List" {
		return true
	}
	_, ok := lookup(strings.TrimSuffix(kind, "List"))
	return ok && strings.HasSuffix(kind, "List")
}

// normalized is the stored form of every object.
type normalized struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   normMeta `json:"metadata"`
	Spec       any      `json:"spec,omitempty"`
	Status     any      `json:"status,omitempty"`
}

type normMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// DeletionTimestamp marks an object that is going away (a Pod
	// terminating: its endpoints stop taking new connections).
	DeletionTimestamp *metav1.Time `json:"deletionTimestamp,omitempty"`
}

// lastApplied is kubectl's bookkeeping copy of the whole object; it is large
// and means nothing to netloom.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

func dropAnnotations(a map[string]string) map[string]string {
	if _, ok := a[lastApplied]; !ok {
		return a
	}
	out := make(map[string]string, len(a))
	for k, v := range a {
		if k != lastApplied {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func stringField(m map[string]json.RawMessage, key string) (string, bool) {
	raw, ok := m[key]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonType names the JSON type of a value for messages.
func jsonType(j []byte) string {
	t := bytes.TrimSpace(j)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
