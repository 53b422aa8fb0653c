package nft

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Element is one set element as nft prints it (Text, e.g. "10.0.0.0/8" or
// "10.96.0.10 . 53 : goto svc-x") and as the kernel takes it: one or two
// SetElements (an interval is a start and an IntervalEnd element), kept
// packed in one string of a few dozen bytes with the text. A model of
// 10,000 services holds some 230,000 elements, and an nftables.SetElement
// alone is 128 bytes before its keys; packed, an element costs its bytes
// and one pointer for the collector to follow. An element of a Format
// keeps no text at all: Text makes it from the kernel form when asked
// (listings, errors), which is rare; comparisons read the packed string.
//
// Elements are compared with ==: equal elements have the same text (or
// Format) and kernel form. Make one with NewElement, or with
// AppendFormatted and FormattedElement.
type Element struct {
	// s is a format byte (0: the text follows the kernel form), the
	// number of kernel elements, their packed forms (appendPacked) and,
	// for format 0, the text.
	s string
}

// NewElement is the element text with the kernel elements kernel.
func NewElement(text string, kernel ...nftables.SetElement) Element {
	b := appendHead(make([]byte, 0, 2+len(text)+32*len(kernel)), 0, kernel)
	return Element{s: string(append(b, text...))}
}

// Format makes the text of an element from its kernel elements, for the
// elements of a map whose texts follow from their keys and values. A
// compiler that makes many elements of one kind keeps no text for them.
type Format uint8

var (
	formatsMu sync.Mutex
	formats   = []func([]nftables.SetElement) string{nil} // Format 0: the text is kept
)

// NewFormat registers f, which makes the text of an element from its
// kernel elements (f must not keep them). A package registers its formats
// once, in its variables' initialization; there are at most 255.
func NewFormat(f func(kernel []nftables.SetElement) string) Format {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	if len(formats) > 255 {
		panic("nft: more than 255 element formats")
	}
	formats = append(formats, f)
	return Format(len(formats) - 1)
}

func formatOf(f Format) func([]nftables.SetElement) string {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	return formats[f]
}

// AppendFormatted appends to b an element of format f with the kernel
// elements kernel: a compiler packs many elements into one buffer this
// way, makes it one string and slices it (FormattedElement).
func AppendFormatted(b []byte, f Format, kernel ...nftables.SetElement) []byte {
	if f == 0 {
		panic("nft: AppendFormatted without a Format")
	}
	return appendHead(b, f, kernel)
}

// FormattedElement is the element AppendFormatted wrote as s (a substring
// of the string of a longer buffer).
func FormattedElement(s string) Element { return Element{s: s} }

// appendHead appends the format byte, the count and the packed kernel
// elements.
func appendHead(b []byte, f Format, kernel []nftables.SetElement) []byte {
	if len(kernel) > 255 {
		panic("nft: an element of more than 255 kernel elements")
	}
	b = append(b, byte(f), byte(len(kernel)))
	for _, k := range kernel {
		b = appendPacked(b, k)
	}
	return b
}

// Text is the element as nft prints it.
func (e Element) Text() string {
	if e.s == "" {
		return ""
	}
	if f := Format(e.s[0]); f != 0 {
		return formatOf(f)(e.Kernel())
	}
	p := e.packedForm()
	return e.s[2+len(p):]
}

// packedForm is the packed kernel elements of e.
func (e Element) packedForm() string {
	if e.s == "" {
		return ""
	}
	p := e.s[2:]
	for range int(e.s[1]) {
		_, p = readPacked(p)
	}
	return e.s[2 : len(e.s)-len(p)]
}

// The packed form of one kernel element: a flags byte, the key (a length
// byte and the bytes), then per flag the key end, the value, and the
// verdict (its kind, 4 bytes, and the chain name with a length byte).
const (
	packIntervalEnd = 1 << iota
	packKeyEnd
	packVal
	packVerdict
)

// appendPacked appends the packed form of k to b. Keys, values and chain
// names are at most 255 bytes (the kernel's own limits are 64 and 255);
// timeouts, counters and comments have no packed form: the models of
// netloom use neither, and a compiler that sets one panics here.
func appendPacked(b []byte, k nftables.SetElement) []byte {
	if k.Timeout != 0 || k.Expires != 0 || k.Counter != nil || k.Comment != "" {
		panic("nft: a set element with a timeout, counter or comment has no packed form")
	}
	var flags byte
	if k.IntervalEnd {
		flags |= packIntervalEnd
	}
	if k.KeyEnd != nil {
		flags |= packKeyEnd
	}
	if k.Val != nil {
		flags |= packVal
	}
	if k.VerdictData != nil {
		flags |= packVerdict
	}
	b = append(b, flags)
	b = appendField(b, k.Key)
	if k.KeyEnd != nil {
		b = appendField(b, k.KeyEnd)
	}
	if k.Val != nil {
		b = appendField(b, k.Val)
	}
	if v := k.VerdictData; v != nil {
		b = binary.BigEndian.AppendUint32(b, uint32(v.Kind))
		b = appendField(b, []byte(v.Chain))
	}
	return b
}

func appendField(b, f []byte) []byte {
	if len(f) > 255 {
		panic(fmt.Sprintf("nft: set element field of %d bytes (at most 255)", len(f)))
	}
	b = append(b, byte(len(f)))
	return append(b, f...)
}

// KernelLen is the number of kernel elements of e.
func (e Element) KernelLen() int {
	if e.s == "" {
		return 0
	}
	return int(e.s[1])
}

// Kernel returns the kernel elements of e, in a new slice whose byte
// slices are e's alone.
func (e Element) Kernel() []nftables.SetElement { return e.AppendKernel(nil) }

// AppendKernel appends the kernel elements of e to dst.
func (e Element) AppendKernel(dst []nftables.SetElement) []nftables.SetElement {
	all := e.packedForm()
	if all == "" {
		return dst
	}
	buf := []byte(all) // one copy: the byte slices point into it
	for p := all; p != ""; {
		var pk packed
		off := len(all) - len(p)
		pk, p = readPacked(p)
		dst = append(dst, pk.element(buf[off:]))
	}
	return dst
}

// appendIdentity appends what tells a kernel element apart in a set: its
// key, key end and interval-end flag (not its value or verdict).
func appendIdentity[T string | []byte](b []byte, key, keyEnd T, intervalEnd bool) []byte {
	b = append(b, byte(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(keyEnd)))
	b = append(b, keyEnd...)
	if intervalEnd {
		return append(b, 1)
	}
	return append(b, 0)
}

// eachIdentity calls f with the identity (appendIdentity) of each kernel
// element of e, built in buf; f must not keep it. It returns buf for the
// next call, and copies nothing else.
func (e Element) eachIdentity(buf []byte, f func(id []byte)) []byte {
	for p := e.packedForm(); p != ""; {
		var pk packed
		pk, p = readPacked(p)
		buf = appendIdentity(buf[:0], pk.key, pk.keyEnd, pk.flags&packIntervalEnd != 0)
		f(buf)
	}
	return buf
}

// packed is one packed kernel element as readPacked finds it: its flags
// and its fields, substrings of the packed string; each field's offset
// from the element's start is kept for element.
type packed struct {
	flags                   byte
	key, keyEnd, val, chain string
	kind                    expr.VerdictKind
	keyAt, keyEndAt, valAt  int
}

// readPacked reads the packed kernel element at the start of p (as
// appendPacked wrote it) and returns it and the rest of p.
func readPacked(p string) (packed, string) {
	pk := packed{flags: p[0]}
	i := 1
	field := func() (string, int) {
		n := int(p[i])
		at := i + 1
		i = at + n
		return p[at:i], at
	}
	pk.key, pk.keyAt = field()
	if pk.flags&packKeyEnd != 0 {
		pk.keyEnd, pk.keyEndAt = field()
	}
	if pk.flags&packVal != 0 {
		pk.val, pk.valAt = field()
	}
	if pk.flags&packVerdict != 0 {
		pk.kind = expr.VerdictKind(int32(binary.BigEndian.Uint32([]byte(p[i : i+4]))))
		i += 4
		pk.chain, _ = field()
	}
	return pk, p[i:]
}

// element is pk as a kernel element whose byte slices are b's, b holding
// a copy of pk's packed bytes from the element's start.
func (pk packed) element(b []byte) nftables.SetElement {
	k := nftables.SetElement{IntervalEnd: pk.flags&packIntervalEnd != 0}
	k.Key = b[pk.keyAt : pk.keyAt+len(pk.key) : pk.keyAt+len(pk.key)]
	if pk.flags&packKeyEnd != 0 {
		k.KeyEnd = b[pk.keyEndAt : pk.keyEndAt+len(pk.keyEnd) : pk.keyEndAt+len(pk.keyEnd)]
	}
	if pk.flags&packVal != 0 {
		k.Val = b[pk.valAt : pk.valAt+len(pk.val) : pk.valAt+len(pk.val)]
	}
	if pk.flags&packVerdict != 0 {
		k.VerdictData = &expr.Verdict{Kind: pk.kind, Chain: pk.chain}
	}
	return k
}
