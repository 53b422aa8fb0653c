package firewall

import (
	"net/netip"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ipFamily matches the packet's layer 3 family (IPv4 for a v4 address). In
// an inet table nft adds this before any ip/ip6 payload match and hides it
// when listing, so its text is empty.
func ipFamily(a netip.Addr) Frag {
	if !a.Is6() {
		return IPv4()
	}
	return Frag{Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: []byte{unix.NFPROTO_IPV6}},
	}}
}
