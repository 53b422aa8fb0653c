package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Element is one set element as nft prints it (Text, e.g. "10.0.0.0/8" or
// "10.96.0.10 . 53 : goto svc-x"), its identity in every comparison, and
// as the kernel takes it: one or two SetElements (an interval is a start
// and an IntervalEnd element), kept packed in a string of a few dozen
// bytes. A model of 10,000 services holds some 230,000 elements, and an
// nftables.SetElement alone is 128 bytes before its keys; packed, an
// element's kernel form costs its bytes and no pointer for the collector
// to follow. Make one with NewElement, or PackedElement from AppendPacked.
type Element struct {
	Text   string
	packed string
}

// NewElement is the element text with the kernel elements kernel.
func NewElement(text string, kernel ...nftables.SetElement) Element {
	var b []byte
	for _, k := range kernel {
		b = AppendPacked(b, k)
	}
	return Element{Text: text, packed: string(b)}
}

// PackedElement is the element text whose kernel elements packed holds, as
// AppendPacked wrote them (a compiler packs a whole fragment's elements
// into one buffer and slices it).
func PackedElement(text, packed string) Element { return Element{Text: text, packed: packed} }

// The packed form of one kernel element: a flags byte, the key (a length
// byte and the bytes), then per flag the key end, the value, and the
// verdict (its kind, 4 bytes, and the chain name with a length byte).
const (
	packIntervalEnd = 1 << iota
	packKeyEnd
	packVal
	packVerdict
)

// AppendPacked appends the packed form of k to b. Keys, values and chain
// names are at most 255 bytes (the kernel's own limits are 64 and 255);
// timeouts, counters and comments have no packed form: the models of
// netloom use neither, and a compiler that sets one panics here.
func AppendPacked(b []byte, k nftables.SetElement) []byte {
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
	n := 0
	for p := e.packed; p != ""; n++ {
		_, p = readPacked(p)
	}
	return n
}

// Kernel returns the kernel elements of e, in a new slice whose byte
// slices are e's alone.
func (e Element) Kernel() []nftables.SetElement { return e.AppendKernel(nil) }

// AppendKernel appends the kernel elements of e to dst.
func (e Element) AppendKernel(dst []nftables.SetElement) []nftables.SetElement {
	if e.packed == "" {
		return dst
	}
	buf := []byte(e.packed) // one copy: the byte slices point into it
	for p := e.packed; p != ""; {
		var pk packed
		off := len(e.packed) - len(p)
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
	for p := e.packed; p != ""; {
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
// AppendPacked wrote it) and returns it and the rest of p.
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
