package nft

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// elemTexts returns the sorted texts of es.
func elemTexts(es []Element) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Text()
	}
	slices.Sort(out)
	return out
}

// TestDiffSetsParts checks diffSets against diffElements of the flattened
// sets, for sets in pieces that a producer changes the way lb/proxy's
// Compiler does: most pieces kept (the same slices), some replaced by
// new slices (with the same texts or others), some added or removed, and
// sets given as Elements on one side.
func TestDiffSetsParts(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	piece := func(tag string, n int) []Element {
		es := make([]Element, n)
		for i := range es {
			es[i] = NewElement(fmt.Sprintf("%s-%d", tag, i))
		}
		return es
	}
	for round := range 300 {
		var a [][]Element
		for i := range 1 + rng.IntN(30) {
			a = append(a, piece(fmt.Sprintf("p%d", i), rng.IntN(4)))
		}
		b := slices.Clone(a)
		for range rng.IntN(4) {
			i := rng.IntN(len(b) + 1)
			switch op := rng.IntN(4); {
			case op == 0 && i < len(b): // the same texts in a new slice
				b[i] = slices.Clone(b[i])
			case op == 1 && i < len(b): // changed texts
				b[i] = piece(fmt.Sprintf("new%d-%d", round, i), 1+rng.IntN(3))
			case op == 2 && i < len(b): // removed
				b = slices.Delete(b, i, i+1)
			default: // added
				b = slices.Insert(b, i, piece(fmt.Sprintf("add%d-%d", round, i), 1+rng.IntN(3)))
			}
		}
		sa, sb := Set{Parts: a}, Set{Parts: b}
		if round%5 == 0 {
			sa = Set{Elements: sa.Flat()}
		}
		adds, dels := diffSets(&sa, &sb)
		wantAdds, wantDels := diffElements(sa.Flat(), sb.Flat())
		if !slices.Equal(elemTexts(adds), elemTexts(wantAdds)) || !slices.Equal(elemTexts(dels), elemTexts(wantDels)) {
			t.Fatalf("round %d: diffSets adds %v dels %v; flattened: adds %v dels %v",
				round, elemTexts(adds), elemTexts(dels), elemTexts(wantAdds), elemTexts(wantDels))
		}
	}
}

func TestSetParts(t *testing.T) {
	s := Set{Parts: [][]Element{{NewElement("a")}, nil, {NewElement("b"), NewElement("c")}}}
	var got []string
	for e := range s.All() {
		got = append(got, e.Text())
	}
	if s.Len() != 3 || !slices.Equal(got, []string{"a", "b", "c"}) || len(s.Flat()) != 3 {
		t.Errorf("Len %d, All %v, Flat %d: want 3, [a b c], 3", s.Len(), got, len(s.Flat()))
	}
	m := Model{Family: "inet", Table: "t", Sets: []Set{{Name: "s", Type: "ipv4_addr", Parts: s.Parts}}}
	if want := "elements = { a, b, c }"; !strings.Contains(m.String(), want) {
		t.Errorf("model text lacks %q:\n%s", want, m.String())
	}
}
