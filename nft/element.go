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
		_, p = unpack(p, nil)
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
		var k nftables.SetElement
		off := len(e.packed) - len(p)
		k, p = unpack(p, buf[off:])
		dst = append(dst, k)
	}
	return dst
}

// unpack reads one packed kernel element from p (its bytes from b, a copy
// of p, when b is not nil) and returns it and the rest of p.
func unpack(p string, b []byte) (nftables.SetElement, string) {
	var k nftables.SetElement
	flags := p[0]
	i := 1
	field := func() []byte {
		n := int(p[i])
		i++
		var f []byte
		if b != nil {
			f = b[i : i+n : i+n]
		}
		i += n
		return f
	}
	k.IntervalEnd = flags&packIntervalEnd != 0
	k.Key = field()
	if flags&packKeyEnd != 0 {
		k.KeyEnd = field()
	}
	if flags&packVal != 0 {
		k.Val = field()
	}
	if flags&packVerdict != 0 {
		kind := expr.VerdictKind(int32(binary.BigEndian.Uint32([]byte(p[i : i+4]))))
		i += 4
		n := int(p[i])
		i++
		if b != nil {
			k.VerdictData = &expr.Verdict{Kind: kind, Chain: p[i : i+n]}
		}
		i += n
	}
	return k, p[i:]
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
		flags := p[0]
		i := 1
		field := func() string {
			n := int(p[i])
			f := p[i+1 : i+1+n]
			i += 1 + n
			return f
		}
		key := field()
		var keyEnd string
		if flags&packKeyEnd != 0 {
			keyEnd = field()
		}
		if flags&packVal != 0 {
			field()
		}
		if flags&packVerdict != 0 {
			i += 4
			field()
		}
		buf = appendIdentity(buf[:0], key, keyEnd, flags&packIntervalEnd != 0)
		f(buf)
		p = p[i:]
	}
	return buf
}
