package objects

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// none is what tables show for an empty cell, like kubectl.
const none = "<none>"

// PodPlace is where a pod runs: facts the agent knows but the Pod object
// does not carry.
type PodPlace struct {
	IP   netip.Addr
	Node string
}

// Table renders objects of one kind for `netloom get`: the header row, then
// one row per object, sorted by namespace and name. Pods get no IP or node
// here; use PodTable for that.
func Table(kind string, objs []json.RawMessage) ([][]string, error) {
	def, ok := lookup(kind)
	if !ok {
		return nil, fmt.Errorf("table: unknown kind %q (netloom knows: %s)", kind, strings.Join(kindNames(), ", "))
	}
	return def.table(objs)
}

// NamespaceTable renders Namespaces: NAME, LABELS.
func NamespaceTable(objs []json.RawMessage) ([][]string, error) {
	rows := make([][]string, 0, len(objs))
	for _, raw := range objs {
		ns, err := DecodeNamespace(raw)
		if err != nil {
			return nil, fmt.Errorf("namespace table: %w", err)
		}
		rows = append(rows, []string{ns.Name, labelString(ns.Labels)})
	}
	sortRows(rows, 1)
	return append([][]string{{"NAME", "LABELS"}}, rows...), nil
}

// PodTable renders Pods: NAMESPACE, NAME, IP, NODE, LABELS. where maps
// "namespace/name" to the pod's address and node; pods missing from it (or
// a nil map) show <none>.
func PodTable(objs []json.RawMessage, where map[string]PodPlace) ([][]string, error) {
	rows := make([][]string, 0, len(objs))
	for _, raw := range objs {
		p, err := DecodePod(raw)
		if err != nil {
			return nil, fmt.Errorf("pod table: %w", err)
		}
		ip, node := none, none
		if pl, ok := where[p.Namespace+"/"+p.Name]; ok {
			if pl.IP.IsValid() {
				ip = pl.IP.String()
			}
			if pl.Node != "" {
				node = pl.Node
			}
		}
		rows = append(rows, []string{p.Namespace, p.Name, ip, node, labelString(p.Labels)})
	}
	sortRows(rows, 2)
	return append([][]string{{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"}}, rows...), nil
}

// labelString renders labels as kubectl's --show-labels does:
// "app=web,tier=front", sorted by key, or <none>.
func labelString(l map[string]string) string {
	if len(l) == 0 {
		return none
	}
	parts := make([]string, 0, len(l))
	for _, k := range sortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// sortRows sorts rows by their first n columns.
func sortRows(rows [][]string, n int) {
	sort.SliceStable(rows, func(i, j int) bool {
		for c := 0; c < n; c++ {
			if rows[i][c] != rows[j][c] {
				return rows[i][c] < rows[j][c]
			}
		}
		return false
	})
}

// WriteTable writes rows (header first) as aligned columns, the way
// kubectl prints them.
func WriteTable(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, r := range rows {
		if _, err := fmt.Fprintln(tw, strings.Join(r, "\t")); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// ToYAML renders one object (or any JSON) as YAML.
func ToYAML(raw json.RawMessage) ([]byte, error) {
	y, err := yaml.JSONToYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("to yaml: %w", err)
	}
	return y, nil
}

// List wraps objects in a `kind: List` object, the shape kubectl prints for
// `get -o yaml|json` of several objects; Parse reads it back.
func List(objs []json.RawMessage) (json.RawMessage, error) {
	if objs == nil {
		objs = []json.RawMessage{}
	}
	b, err := json.Marshal(struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}{"v1", "List", objs})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	return b, nil
}
