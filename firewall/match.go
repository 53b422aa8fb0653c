package firewall

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A frag is a piece of a rule: its nft text (empty for implicit parts such
// as the `meta nfproto` dependency nft hides when listing) and its
// expressions. Rules are built by concatenating frags, so the text and the
// expressions are written next to each other and cannot drift apart.
type frag struct {
	text  string
	exprs []expr.Any
}

// newRule joins frags into a Rule.
func newRule(fs ...frag) Rule {
	var texts []string
	var exprs []expr.Any
	for _, f := range fs {
		if f.text != "" {
			texts = append(texts, f.text)
		}
		exprs = append(exprs, f.exprs...)
	}
	return Rule{Text: strings.Join(texts, " "), Exprs: exprs}
}

// ipFamily matches the packet's layer 3 family (IPv4 for a v4 address). In
// an inet table nft adds this before any ip/ip6 payload match and hides it
// when listing, so its text is empty.
func ipFamily(a netip.Addr) frag {
	proto := byte(unix.NFPROTO_IPV4)
	if a.Is6() {
		proto = unix.NFPROTO_IPV6
	}
	return frag{exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}}
}

// addrField is a source or destination address of the network header.
type addrField int

const (
	saddr addrField = iota
	daddr
)

// prefixMatch matches the field against p ("ip saddr 10.244.0.0/16",
// "ip6 daddr != fd00::/64"); neg inverts it. The caller adds ipFamily first.
func prefixMatch(field addrField, p netip.Prefix, neg bool) frag {
	p = p.Masked()
	addr := p.Addr()
	proto, size, offset := "ip", uint32(4), uint32(12) // IPv4 saddr at 12, daddr at 16
	if addr.Is6() {
		proto, size, offset = "ip6", 16, 8 // IPv6 saddr at 8, daddr at 24
	}
	name := "saddr"
	if field == daddr {
		name = "daddr"
		offset += size
	}
	op, opText := expr.CmpOpEq, ""
	if neg {
		op, opText = expr.CmpOpNeq, "!= "
	}
	exprs := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
	}
	value := p.String()
	if p.IsSingleIP() {
		value = addr.String()
	} else {
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: size,
			Mask: prefixMask(p), Xor: make([]byte, size),
		})
	}
	exprs = append(exprs, &expr.Cmp{Op: op, Register: 1, Data: addr.AsSlice()})
	return frag{text: fmt.Sprintf("%s %s %s%s", proto, name, opText, value), exprs: exprs}
}

func prefixMask(p netip.Prefix) []byte {
	mask := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return mask
}

// ifname matches the input (in) or output interface name.
func ifname(in bool, name string) frag {
	key, kw := expr.MetaKeyOIFNAME, "oifname"
	if in {
		key, kw = expr.MetaKeyIIFNAME, "iifname"
	}
	return frag{
		text: fmt.Sprintf("%s %q", kw, name),
		exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(name)},
		},
	}
}

// ifnameBytes is the name NUL-padded to IFNAMSIZ, as nft sends it.
func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// ctStateEstablishedRelated is "ct state established,related".
func ctStateEstablishedRelated() frag {
	return frag{
		text: "ct state established,related",
		exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		},
	}
}

func accept() frag {
	return frag{text: "accept", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
}

func masquerade() frag {
	return frag{text: "masquerade", exprs: []expr.Any{&expr.Masq{}}}
}
