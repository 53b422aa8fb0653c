package nft

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The building blocks of rules, shared by the generators of a table's
// fragments (firewall.Ruleset, NetworkPolicy, the service proxy). A Frag
// is a piece of a rule: its nft text, as `nft list` prints it (empty for
// implicit parts such as the `meta nfproto` dependency nft adds and hides
// when listing), and its expressions. Rules are built by joining frags, so the
// text and the expressions are written next to each other and cannot drift
// apart; the root tests compare nft's listing of an applied Model with
// Model.String. The expressions are what nft generates for the same text.
//
// Matches on ip payloads are IPv4 only unless they say otherwise, and
// expect the IPv4 (or IPFamily) dependency in front of them.

// Frag is a piece of a rule: Text and the Exprs it stands for.
type Frag struct {
	Text  string
	Exprs []expr.Any
}

// Join concatenates frags into one: the texts separated by spaces (empty
// ones left out), the expressions in order.
func Join(fs ...Frag) Frag {
	var texts []string
	var exprs []expr.Any
	for _, f := range fs {
		if f.Text != "" {
			texts = append(texts, f.Text)
		}
		exprs = append(exprs, f.Exprs...)
	}
	return Frag{Text: strings.Join(texts, " "), Exprs: exprs}
}

// NewRule joins frags into a Rule.
func NewRule(fs ...Frag) Rule {
	f := Join(fs...)
	return Rule{Text: f.Text, Exprs: f.Exprs}
}

// Registers, numbered as `nft --debug=netlink` prints them: NFT_REG_1 and
// NFT_REG_2 are 16-byte data registers; the 32-bit registers NFT_REG32_00
// (8), 01 (9), 02 (10)... overlay the same storage, so a concatenation
// loaded from Reg1 continues in Reg9, Reg10, Reg11.
const (
	Reg1  = 1
	Reg2  = 2
	Reg9  = 9
	Reg10 = 10
	Reg11 = 11
)

// IPv4 is the `meta nfproto ipv4` dependency nft adds before ip payload
// matches in an inet table (and hides when listing).
func IPv4() Frag {
	return Frag{Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: []byte{unix.NFPROTO_IPV4}},
	}}
}

// IPFamily is the dependency for matches on addresses of a's family: IPv4
// for an IPv4 address, else `meta nfproto ipv6` (which nft likewise adds
// before ip6 payload matches in an inet table and hides when listing).
func IPFamily(a netip.Addr) Frag {
	if !a.Is6() {
		return IPv4()
	}
	return Frag{Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: []byte{unix.NFPROTO_IPV6}},
	}}
}

// AddrField is the source or destination address of the network header.
type AddrField int

const (
	Saddr AddrField = iota
	Daddr
)

// LoadAddr loads the IPv4 source or destination address into reg.
func LoadAddr(f AddrField, reg uint32) expr.Any {
	off := uint32(12)
	if f == Daddr {
		off = 16
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}
}

// Addr is "ip saddr" or "ip daddr": the IPv4 address loaded into Reg1, the
// key of a Lookup or VmapLookup that follows.
func Addr(f AddrField) Frag {
	name := "ip saddr"
	if f == Daddr {
		name = "ip daddr"
	}
	return Frag{Text: name, Exprs: []expr.Any{LoadAddr(f, Reg1)}}
}

// PrefixMatch matches the field against p ("ip saddr 10.244.0.0/16",
// "ip6 daddr != fd00::/64"), IPv4 or IPv6 as p is; neg inverts it. The
// caller adds the family dependency (IPFamily(p.Addr()), or IPv4) first.
func PrefixMatch(field AddrField, p netip.Prefix, neg bool) Frag {
	p = p.Masked()
	addr := p.Addr()
	proto, size, offset := "ip", uint32(4), uint32(12) // IPv4 saddr at 12, daddr at 16
	if addr.Is6() {
		proto, size, offset = "ip6", 16, 8 // IPv6 saddr at 8, daddr at 24
	}
	name := "saddr"
	if field == Daddr {
		name = "daddr"
		offset += size
	}
	op, opText := expr.CmpOpEq, ""
	if neg {
		op, opText = expr.CmpOpNeq, "!= "
	}
	exprs := []expr.Any{
		&expr.Payload{DestRegister: Reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
	}
	value := p.String()
	if p.IsSingleIP() {
		value = addr.String()
	} else {
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: Reg1, DestRegister: Reg1, Len: size,
			Mask: prefixMask(p), Xor: make([]byte, size),
		})
	}
	exprs = append(exprs, &expr.Cmp{Op: op, Register: Reg1, Data: addr.AsSlice()})
	return Frag{Text: fmt.Sprintf("%s %s %s%s", proto, name, opText, value), Exprs: exprs}
}

func prefixMask(p netip.Prefix) []byte {
	mask := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return mask
}

// LoadL4ProtoDport loads `meta l4proto . th dport`: the protocol into
// register first, the transport header's destination port into second.
func LoadL4ProtoDport(first, second uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: first},
		&expr.Payload{DestRegister: second, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// DaddrProtoPort is "ip daddr . meta l4proto . th dport", loaded from
// Reg1 on (Reg1, Reg9, Reg10): the key of a lookup by service or pod
// address and port.
func DaddrProtoPort() Frag {
	f := Addr(Daddr)
	f.Text += " . meta l4proto . th dport"
	f.Exprs = append(f.Exprs, LoadL4ProtoDport(Reg9, Reg10)...)
	return f
}

// L4ProtoName is the name nft prints for an L4 protocol number ("tcp"),
// the number itself for those without one here.
func L4ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

// Lookup is "@set": the key loaded from Reg1 on is in set.
func Lookup(set string) Frag {
	return Frag{Text: "@" + set, Exprs: []expr.Any{&expr.Lookup{SourceRegister: Reg1, SetName: set}}}
}

// VmapLookup is "vmap @set": the verdict of the key loaded from Reg1 on in
// the verdict map set.
func VmapLookup(set string) Frag {
	return Frag{Text: "vmap @" + set, Exprs: []expr.Any{
		&expr.Lookup{SourceRegister: Reg1, SetName: set, DestRegister: 0, IsDestRegSet: true},
	}}
}

// Conntrack state bits, for CtState.
const (
	CtInvalid     = expr.CtStateBitINVALID
	CtEstablished = expr.CtStateBitESTABLISHED
	CtRelated     = expr.CtStateBitRELATED
	CtNew         = expr.CtStateBitNEW
)

// CtState is "ct state established,related": the connection is in one of
// the states of mask (CtInvalid|CtEstablished...).
func CtState(mask uint32) Frag {
	var names []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}} {
		if mask&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	return Frag{
		Text: "ct state " + strings.Join(names, ","),
		Exprs: []expr.Any{
			&expr.Ct{Register: Reg1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: Reg1, DestRegister: Reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(mask),
				Xor:  binaryutil.NativeEndian.PutUint32(0),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: Reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
		},
	}
}

// Iifname is `iifname "name"`: the packet came in through interface name.
func Iifname(name string) Frag { return ifname(expr.MetaKeyIIFNAME, "iifname", name) }

// Oifname is `oifname "name"`: the packet goes out through interface name.
func Oifname(name string) Frag { return ifname(expr.MetaKeyOIFNAME, "oifname", name) }

func ifname(key expr.MetaKey, kw, name string) Frag {
	b := make([]byte, unix.IFNAMSIZ) // NUL-padded, as nft sends it
	copy(b, name)
	return Frag{
		Text: fmt.Sprintf("%s %q", kw, name),
		Exprs: []expr.Any{
			&expr.Meta{Key: key, Register: Reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: b},
		},
	}
}

// Masquerade is "masquerade": source NAT to the outgoing interface's
// address.
func Masquerade() Frag {
	return Frag{Text: "masquerade", Exprs: []expr.Any{&expr.Masq{}}}
}

// Accept is "accept".
func Accept() Frag { return verdict("accept", expr.VerdictAccept, "") }

// Drop is "drop".
func Drop() Frag { return verdict("drop", expr.VerdictDrop, "") }

// Return is "return": back to the chain that jumped here.
func Return() Frag { return verdict("return", expr.VerdictReturn, "") }

// Goto is "goto chain".
func Goto(chain string) Frag { return verdict("goto "+chain, expr.VerdictGoto, chain) }

func verdict(text string, kind expr.VerdictKind, chain string) Frag {
	return Frag{Text: text, Exprs: []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}}
}
