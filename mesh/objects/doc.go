// Package objects reads the Kubernetes-style manifests that users give to
// `netloom apply -f` and turns them into normalized, validated objects for the
// replicated store.
//
// A manifest is multi-document YAML (documents separated by `---` lines) or
// JSON (one object, a stream of objects, an array, or a `kind: List`). Each
// document is converted to JSON with sigs.k8s.io/yaml, decoded into the typed
// Kubernetes struct of its kind (k8s.io/api), validated with the apimachinery
// rules for names and labels, defaulted, and re-marshaled into a normalized
// form: apiVersion, kind, metadata (name, namespace, labels, annotations only)
// and spec. Status, uid, resourceVersion, managedFields and the like are
// dropped, so the same manifest always yields the same bytes.
//
// Parsing is all-or-nothing: the first invalid document makes Parse return a
// *DocumentError, whose message is a single line naming the document, the
// object and the field, e.g.
//
//	document 2 (Pod default/web): metadata.labels: invalid label value "a b": ...
//
// Fields unknown to a known kind are ignored (like kubectl's default), but a
// value of the wrong type is an error.
//
// The kinds netloom knows live in one table (see kinds.go); each entry names
// the kind's apiVersions, whether it is namespaced, its aliases for the CLI,
// its decode and validate functions, and the columns of its `netloom get`
// table, each read from a document. Adding a kind means adding an entry
// there.
//
// `netloom get` shows documents: the stored ones, with what the agent knows
// and they do not carry put where Kubernetes keeps it by PodView (a pod's
// address and node; a pod attached by CNI without a stored Pod gets one),
// ServiceView (a service's addresses, announcing node, pending reason) and
// PolicyView (the pods a policy selects, its counters). Table and the
// json/yaml output both come from those documents.
package objects
