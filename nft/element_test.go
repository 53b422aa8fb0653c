package nft

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestElementPacking(t *testing.T) {
	cases := map[string][]nftables.SetElement{
		"key":       {{Key: []byte{10, 0, 0, 1}}},
		"interval":  {{Key: []byte{10, 0, 0, 0}}, {Key: []byte{10, 0, 1, 0}, IntervalEnd: true}},
		"key end":   {{Key: []byte{6, 0, 0, 0, 0, 80, 0, 0}, KeyEnd: []byte{6, 0, 0, 0, 0, 90, 0, 0}}},
		"map":       {{Key: []byte{10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0, 1, 0, 0, 0}, Val: []byte{10, 244, 1, 5, 31, 144, 0, 0}}},
		"goto":      {{Key: []byte{10, 96, 0, 10}, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc-ep-abc"}}},
		"drop":      {{Key: []byte{10, 96, 0, 10}, VerdictData: &expr.Verdict{Kind: expr.VerdictDrop}}},
		"empty key": {{Key: []byte{}, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: "x"}}},
	}
	for name, kernel := range cases {
		e := NewElement("text of "+name, kernel...)
		if e.Text() != "text of "+name {
			t.Errorf("%s: Text %q", name, e.Text())
		}
		if e.KernelLen() != len(kernel) {
			t.Errorf("%s: KernelLen %d, want %d", name, e.KernelLen(), len(kernel))
		}
		got := e.Kernel()
		if !reflect.DeepEqual(got, kernel) {
			t.Errorf("%s: Kernel %+v, want %+v", name, got, kernel)
		}
		// The kernel elements are the caller's: changing them leaves e as
		// it was.
		if len(got[0].Key) > 0 {
			got[0].Key[0] ^= 0xff
		}
		if again := e.Kernel(); !reflect.DeepEqual(again, kernel) {
			t.Errorf("%s: Kernel after a change of a returned key: %+v", name, again)
		}
		// The identities read from the packed form are those of the
		// kernel elements (Drift compares the kernel's by them).
		var ids []string
		e.eachIdentity(nil, func(id []byte) { ids = append(ids, string(id)) })
		for i, k := range kernel {
			if want := string(appendIdentity(nil, k.Key, k.KeyEnd, k.IntervalEnd)); i >= len(ids) || ids[i] != want {
				t.Errorf("%s: identity %d = %q, want %q", name, i, ids, want)
			}
		}
		// AppendKernel keeps what dst held.
		both := NewElement("x", kernel...).AppendKernel(e.Kernel())
		if len(both) != 2*len(kernel) || !reflect.DeepEqual(both[len(kernel):], kernel) {
			t.Errorf("%s: AppendKernel %+v", name, both)
		}
	}
	if e := NewElement("no kernel form"); e.KernelLen() != 0 || e.Kernel() != nil {
		t.Errorf("element without kernel elements: %d, %+v", e.KernelLen(), e.Kernel())
	}
	if e := NewElement("no kernel form"); e.Text() != "no kernel form" {
		t.Errorf("element without kernel elements: text %q", e.Text())
	}
	if (Element{}).Text() != "" || (Element{}).KernelLen() != 0 {
		t.Error("the zero element has a text or kernel elements")
	}
	// Equal elements compare equal, as the models' comparisons need.
	if NewElement("t", cases["map"]...) != NewElement("t", cases["map"]...) {
		t.Error("equal elements compare unequal")
	}
}

// testFormat prints an element as its keys in hex and its verdict.
var testFormat = NewFormat(func(kernel []nftables.SetElement) string {
	var b strings.Builder
	for _, k := range kernel {
		fmt.Fprintf(&b, "%x", k.Key)
		if v := k.VerdictData; v != nil {
			fmt.Fprintf(&b, " : %d %s", v.Kind, v.Chain)
		}
	}
	return b.String()
})

func TestFormattedElements(t *testing.T) {
	key := nftables.SetElement{Key: []byte{10, 0, 0, 1}}
	jump := nftables.SetElement{Key: []byte{10, 96, 0, 10}, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc-ep-abc"}}
	// Two elements packed into one buffer and sliced, as compilers do.
	buf := AppendFormatted(nil, testFormat, key)
	n := len(buf)
	buf = AppendFormatted(buf, testFormat, jump)
	s := string(buf)
	a, b := FormattedElement(s[:n]), FormattedElement(s[n:])
	if !reflect.DeepEqual(a.Kernel(), []nftables.SetElement{key}) || !reflect.DeepEqual(b.Kernel(), []nftables.SetElement{jump}) {
		t.Errorf("sliced: %+v, %+v", a.Kernel(), b.Kernel())
	}
	if a.Text() != "0a000001" || b.Text() != fmt.Sprintf("0a60000a : %d svc-ep-abc", expr.VerdictGoto) {
		t.Errorf("texts %q, %q", a.Text(), b.Text())
	}
	if a.KernelLen() != 1 || b.KernelLen() != 1 {
		t.Errorf("KernelLen %d, %d", a.KernelLen(), b.KernelLen())
	}
	// Equal in content is equal with ==, wherever the bytes are; a kept
	// text and a format with the same kernel form are two elements.
	if again := FormattedElement(string(AppendFormatted(nil, testFormat, jump))); again != b {
		t.Error("equal formatted elements compare unequal")
	}
	if a == b || a == NewElement(a.Text(), key) {
		t.Error("different elements compare equal")
	}
	other := jump
	other.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc-ep-abd"}
	if FormattedElement(string(AppendFormatted(nil, testFormat, other))) == b {
		t.Error("elements of different verdicts compare equal")
	}
}

func TestElementPackingRefusesWhatItCannotHold(t *testing.T) {
	for name, k := range map[string]nftables.SetElement{
		"timeout":  {Key: []byte{1}, Timeout: time.Second},
		"comment":  {Key: []byte{1}, Comment: "x"},
		"long key": {Key: make([]byte, 256)},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: packed without a panic", name)
				}
			}()
			NewElement("x", k)
		}()
	}
}
