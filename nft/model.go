package nft

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Model is the whole content of one nftables table. It is a plain value:
// build it with the constructors of this package (NewRule and the Frags),
// join fragments with Merge, compare it, render it with String, install it
// with Applier.Apply.
type Model struct {
	Family string // nft family name: "inet", "ip" or "ip6"
	Table  string
	Sets   []Set // named sets and maps; rendered and created sorted by name
	Chains []Chain
	// Counters are named counter objects (`counter NAME { }`), referenced
	// by rules with `counter name "NAME"`; rendered and created sorted.
	// Their values survive incremental Applies; Applier.Counters reads them.
	Counters []string
}

// Chain is a base chain (Hook set) or a regular chain (jump/goto target).
type Chain struct {
	Name string
	// Base chains only: Type "filter" | "nat" | "route"; Hook "prerouting" |
	// "input" | "forward" | "output" | "postrouting"; Priority as a number
	// (rendered the way nft does: "filter", "srcnat", "dstnat + 5"...);
	// Policy "accept" (also when empty) or "drop".
	Type     string
	Hook     string
	Priority int32
	Policy   string
	// Rules in evaluation order (their order is meaningful and kept).
	Rules []Rule
}

// Rule is one nft rule in two forms that must agree: Text as `nft list`
// prints it (golden files, logs, the root test compares it with nft's own
// listing) and Exprs, the expressions sent to the kernel.
type Rule struct {
	Text  string
	Exprs []expr.Any
}

// Set is a named set or map of the table. Text fields render it; Spec and
// the elements' Kernel fields are what the Applier sends. The Applier fills
// in Spec.Table, Spec.Name and Spec.ID itself, and Lookup/Dynset
// expressions that name the set get its ID in the same transaction.
type Set struct {
	Name  string
	Type  string   // nft text: "ipv4_addr", "ipv4_addr . inet_service : verdict"
	Flags []string // nft text: "interval", "constant"...
	// Elements are the set's elements, unless Parts is not nil.
	Elements []Element
	// Parts, when not nil, hold the elements instead: their concatenation,
	// in order. A producer that builds a large set from pieces that mostly
	// stay the same from one Model to the next (lb/proxy's Compiler: one
	// piece per service port) hands the pieces over as they are, and the
	// Applier's diff skips a piece it applied before (the same slice)
	// without reading it: a change then costs its own elements, not the
	// set's. A piece is never modified once it is in a Model.
	Parts [][]Element
	Spec  nftables.Set
}

// Len is the number of elements of s.
func (s *Set) Len() int {
	if s.Parts == nil {
		return len(s.Elements)
	}
	n := 0
	for _, p := range s.Parts {
		n += len(p)
	}
	return n
}

// All yields the elements of s in order.
func (s *Set) All() iter.Seq[Element] {
	return func(yield func(Element) bool) {
		for _, p := range s.pieces() {
			for _, e := range p {
				if !yield(e) {
					return
				}
			}
		}
	}
}

// Flat returns the elements of s as one list: Elements itself when s has
// no Parts, else a new list.
func (s *Set) Flat() []Element {
	if s.Parts == nil {
		return s.Elements
	}
	out := make([]Element, 0, s.Len())
	for _, p := range s.Parts {
		out = append(out, p...)
	}
	return out
}

// pieces is Parts, or Elements as the one piece.
func (s *Set) pieces() [][]Element {
	if s.Parts == nil {
		return [][]Element{s.Elements}
	}
	return s.Parts
}

// BaseChain reports whether c is attached to a hook.
func (c Chain) BaseChain() bool { return c.Hook != "" }

// Chain returns the chain named name, or false.
func (m Model) Chain(name string) (Chain, bool) {
	for _, c := range m.Chains {
		if c.Name == name {
			return c, true
		}
	}
	return Chain{}, false
}

// String renders the model like `nft list table` does: sets first, then
// chains, each group sorted by name (the Applier creates them in that order,
// so nft's own listing, ordered by handle, comes out the same); rules keep
// their order; set elements are sorted by their text.
func (m Model) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", m.Family, m.Table)
	first := true
	sep := func() {
		if !first {
			b.WriteString("\n")
		}
		first = false
	}
	for _, name := range sortedStrings(m.Counters) {
		sep()
		fmt.Fprintf(&b, "\tcounter %s {\n\t\tpackets 0 bytes 0\n\t}\n", name)
	}
	for _, s := range sortedSets(m.Sets) {
		sep()
		kind := "set"
		if s.Spec.IsMap {
			kind = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {\n", kind, s.Name)
		fmt.Fprintf(&b, "\t\ttype %s\n", s.Type)
		if len(s.Flags) > 0 {
			fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(s.Flags, ","))
		}
		if s.Len() > 0 {
			texts := make([]string, 0, s.Len())
			for e := range s.All() {
				texts = append(texts, e.Text())
			}
			slices.Sort(texts)
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(texts, ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, c := range sortedChains(m.Chains) {
		sep()
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.BaseChain() {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy %s;\n",
				c.Type, c.Hook, priorityText(c.Hook, c.Priority), policyText(c.Policy))
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func sortedSets(in []Set) []Set {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func sortedStrings(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

func sortedChains(in []Chain) []Chain {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func policyText(p string) string {
	if p == "" {
		return "accept"
	}
	return p
}

// Standard chain priorities (nft's names for the inet/ip/ip6 families).
const (
	PriorityRaw      int32 = -300
	PriorityMangle   int32 = -150
	PriorityDstNAT   int32 = -100
	PriorityFilter   int32 = 0
	PrioritySecurity int32 = 50
	PrioritySrcNAT   int32 = 100
)

var stdPriorities = []struct {
	name string
	num  int32
}{
	{"raw", PriorityRaw},
	{"mangle", PriorityMangle},
	{"dstnat", PriorityDstNAT},
	{"filter", PriorityFilter},
	{"security", PrioritySecurity},
	{"srcnat", PrioritySrcNAT},
}

// priorityText renders a priority as nft 1.0 does: a standard name allowed
// on the hook, with an offset of at most 10, else the number.
func priorityText(hook string, prio int32) string {
	for _, sp := range stdPriorities {
		switch {
		case sp.num == PriorityDstNAT && hook != "prerouting" && hook != "output":
			continue
		case sp.num == PrioritySrcNAT && hook != "postrouting" && hook != "input":
			continue
		}
		switch off := prio - sp.num; {
		case off == 0:
			return sp.name
		case off > 0 && off <= 10:
			return fmt.Sprintf("%s + %d", sp.name, off)
		case off < 0 && off >= -10:
			return fmt.Sprintf("%s - %d", sp.name, -off)
		}
	}
	return fmt.Sprint(prio)
}
