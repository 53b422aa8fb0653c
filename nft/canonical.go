package nft

import (
	"slices"
	"strings"
)

// Canonical rewrites a table listing (Model.String, or `nft list table`'s
// output) into a form in which two listings of the same content are equal:
// top-level blocks (counters, sets, maps, chains) sorted by kind and name,
// element lists joined onto one line and sorted, counter values dropped,
// blank lines removed. nft lists objects in the order they were created
// and wraps and orders elements its own way; after incremental updates
// that order is no longer the model's, but the content must still be.
func Canonical(listing string) string {
	var lines []string
	for _, l := range strings.Split(listing, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	var head []string
	var blocks [][]string
	var cur []string
	depth := 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case depth == 0:
			head = append(head, l)
			if strings.HasSuffix(l, "{") {
				depth = 1
			}
		case depth == 1 && l == "}":
			head = append(head, l)
			depth = 0
		case depth == 1:
			cur = []string{l}
			if strings.HasSuffix(l, "{") {
				depth = 2
			}
		case depth == 2 && l == "}":
			blocks = append(blocks, canonicalBlock(cur))
			cur = nil
			depth = 1
		case depth == 2 && strings.HasPrefix(l, "elements = {"):
			// Join continuation lines up to the closing brace.
			joined := l
			for !strings.HasSuffix(joined, "}") && i+1 < len(lines) {
				i++
				joined += " " + lines[i]
			}
			cur = append(cur, joined)
		default:
			cur = append(cur, l)
		}
	}
	slices.SortFunc(blocks, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	var out []string
	if len(head) > 0 {
		out = append(out, head[0])
	}
	for _, b := range blocks {
		out = append(out, b...)
	}
	if len(head) > 1 {
		out = append(out, head[1:]...)
	}
	return strings.Join(out, "\n") + "\n"
}

func canonicalBlock(b []string) []string {
	if strings.HasPrefix(b[0], "counter ") {
		return []string{b[0], "}"} // values change with traffic
	}
	out := []string{b[0]}
	for _, l := range b[1:] {
		if rest, ok := strings.CutPrefix(l, "elements = {"); ok {
			rest = strings.TrimSuffix(strings.TrimSpace(rest), "}")
			var elems []string
			for _, e := range strings.Split(rest, ",") {
				if e = strings.TrimSpace(e); e != "" {
					elems = append(elems, e)
				}
			}
			slices.Sort(elems)
			l = "elements = { " + strings.Join(elems, ", ") + " }"
		}
		out = append(out, l)
	}
	return append(out, "}")
}
