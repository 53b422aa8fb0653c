package objects

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// none is what tables show for an empty cell, like kubectl.
const none = "<none>"

// Table renders documents of one kind for `netloom get`: the header row,
// then one row per document, sorted by namespace and name. The kind's
// entry in the kind table says the columns and how each reads a document;
// every cell comes from the document. What the agent knows of an object
// and its stored document does not carry (a pod's address, a service's
// VIP, the pods a policy selects) is shown when the document is the one
// PodView, ServiceView or PolicyView returns.
func Table(kind string, objs []json.RawMessage) ([][]string, error) {
	def, ok := lookup(kind)
	if !ok {
		return nil, fmt.Errorf("table: unknown kind %q (netloom knows: %s)", kind, strings.Join(kindNames(), ", "))
	}
	return def.table.rows(def.KindInfo, objs)
}

// tabler renders documents of one kind as table rows, header first.
type tabler interface {
	rows(k KindInfo, objs []json.RawMessage) ([][]string, error)
}

// column is one column of a kind's table: its header and how to read its
// cell from a document decoded as T. An empty cell shows as <none>.
type column[T any] struct {
	name string
	cell func(*T) string
	// optional: the column is left out when every cell of it is empty.
	optional bool
}

// columns are the columns of a kind's table after NAMESPACE (namespaced
// kinds only) and NAME, which every table starts with. Documents decode as
// T, of which a pointer is a metav1.Object.
type columns[T any] []column[T]

func (cs columns[T]) rows(k KindInfo, objs []json.RawMessage) ([][]string, error) {
	header := []string{"NAME"}
	if k.Namespaced {
		header = []string{"NAMESPACE", "NAME"}
	}
	keys := len(header)
	for _, c := range cs {
		header = append(header, c.name)
	}
	used := make([]bool, len(cs))
	rows := make([][]string, 0, len(objs)+1)
	for _, raw := range objs {
		doc := new(T)
		if err := decodeStored(raw, k.Kind, doc); err != nil {
			return nil, fmt.Errorf("%s table: %w", words(k.Kind), err)
		}
		meta := any(doc).(metav1.Object)
		row := []string{meta.GetName()}
		if k.Namespaced {
			row = []string{meta.GetNamespace(), meta.GetName()}
		}
		for i, c := range cs {
			v := c.cell(doc)
			if v == "" {
				v = none
			} else {
				used[i] = true
			}
			row = append(row, v)
		}
		rows = append(rows, row)
	}
	sortRows(rows, keys)
	rows = append([][]string{header}, rows...)
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].optional && !used[i] {
			for r := range rows {
				rows[r] = slices.Delete(rows[r], keys+i, keys+i+1)
			}
		}
	}
	return rows, nil
}

// labelsColumn is the LABELS column of a kind whose documents decode as T.
func labelsColumn[T any]() column[T] {
	return column[T]{name: "LABELS", cell: func(doc *T) string {
		return labelString(any(doc).(metav1.Object).GetLabels())
	}}
}

// words spells a kind in lower-case words, for messages: "NetworkPolicy"
// -> "network policy".
func words(kind string) string {
	var b strings.Builder
	for i, r := range kind {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// labelString renders labels as kubectl's --show-labels does:
// "app=web,tier=front", sorted by key, or "" when there are none.
func labelString(l map[string]string) string {
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
	y, err := yaml.JSONToYAML(escapeForYAML(raw))
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

// escapeForYAML writes the characters the YAML reader refuses in its input
// (DEL, the C1 controls, U+FFFE, U+FFFF, and invalid UTF-8, which
// json.Marshal leaves raw inside strings) and NEL (which it reads as a line
// break) as JSON escapes, so that every object Parse accepts prints as
// YAML that reads back the same. Outside strings JSON has none of them.
func escapeForYAML(raw []byte) []byte {
	yamlOK := func(r rune) bool {
		return r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || (r >= 0x10000 && r <= 0x10ffff)
	}
	var out []byte
	for i := 0; i < len(raw); {
		r, n := utf8.DecodeRune(raw[i:])
		if yamlOK(r) && !(r == utf8.RuneError && n == 1) {
			if out != nil {
				out = append(out, raw[i:i+n]...)
			}
			i += n
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(raw)+16), raw[:i]...)
		}
		out = fmt.Appendf(out, `\u%04x`, r)
		i += n
	}
	if out == nil {
		return raw
	}
	return out
}
