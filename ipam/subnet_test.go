package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// table builds a Table whose winners are all alive from node=subnet pairs.
func table(pairs ...string) Table {
	t := Table{ByNode: map[string]netip.Prefix{}, Owner: map[netip.Prefix]string{}, Reserved: map[netip.Prefix]string{}}
	for i := 0; i < len(pairs); i += 2 {
		p := pfx(pairs[i+1])
		t.ByNode[pairs[i]] = p
		t.Owner[p] = pairs[i]
	}
	return t
}

func TestCheckMask(t *testing.T) {
	tests := []struct {
		cidr    string
		mask    int
		wantErr bool
	}{
		{"10.244.0.0/16", 24, false},
		{"10.244.0.0/16", 16, false},
		{"10.244.0.0/16", 30, false},
		{"10.244.0.0/16", 31, true},
		{"10.244.0.0/16", 15, true},
		{"fd00::/48", 64, false},
		{"fd00::/64", 126, false},
		{"fd00::/48", 126, true}, // 2^78 subnets
		{"fd00::/48", 127, true},
		{"fd00::/48", 112, true}, // 2^64 subnets
		{"fd00::/48", 111, false},
		{"", 24, true},
	}
	for _, tt := range tests {
		var p netip.Prefix
		if tt.cidr != "" {
			p = pfx(tt.cidr)
		}
		err := CheckMask(p, tt.mask)
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckMask(%s, %d) = %v, want error %v", tt.cidr, tt.mask, err, tt.wantErr)
		}
	}
}

func TestGateway(t *testing.T) {
	tests := []struct {
		subnet netip.Prefix
		want   netip.Addr
	}{
		{pfx("10.244.3.0/24"), addr("10.244.3.1")},
		{pfx("10.244.3.77/24"), addr("10.244.3.1")},
		{pfx("fd00:0:0:7::/64"), addr("fd00:0:0:7::1")},
		{netip.Prefix{}, netip.Addr{}},
	}
	for _, tt := range tests {
		if got := Gateway(tt.subnet); got != tt.want {
			t.Errorf("Gateway(%s) = %s, want %s", tt.subnet, got, tt.want)
		}
	}
}

func TestSubnets(t *testing.T) {
	tests := []struct {
		cidr string
		mask int
		want []netip.Prefix
	}{
		{"10.244.0.0/22", 24, []netip.Prefix{pfx("10.244.0.0/24"), pfx("10.244.1.0/24"), pfx("10.244.2.0/24"), pfx("10.244.3.0/24")}},
		{"10.244.7.9/24", 24, []netip.Prefix{pfx("10.244.7.0/24")}},
		{"10.244.0.0/24", 26, []netip.Prefix{pfx("10.244.0.0/26"), pfx("10.244.0.64/26"), pfx("10.244.0.128/26"), pfx("10.244.0.192/26")}},
		{"fd00::/63", 64, []netip.Prefix{pfx("fd00::/64"), pfx("fd00:0:0:1::/64")}},
		{"fd00::/64", 65, []netip.Prefix{pfx("fd00::/65"), pfx("fd00::8000:0:0:0/65")}},
		{"10.244.0.0/24", 23, nil},
	}
	for _, tt := range tests {
		got := slices.Collect(Subnets(pfx(tt.cidr), tt.mask))
		if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("Subnets(%s, %d) (-want +got):\n%s", tt.cidr, tt.mask, diff)
		}
	}
	// Stopping early works.
	n := 0
	for range Subnets(pfx("10.0.0.0/8"), 24) {
		if n++; n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("early break: n = %d", n)
	}
}

func TestU128(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.244.3.1", "255.255.255.255", "::", "fd00:1:2:3:4:5:6:7", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		a := addr(s)
		if got := u128From(a).addr(a.Is4()); got != a {
			t.Errorf("roundtrip %s = %s", a, got)
		}
	}
	u := u128{hi: 1, lo: 1 << 63}
	if got := u.shl(1); got != (u128{hi: 3, lo: 0}) {
		t.Errorf("shl = %+v", got)
	}
	if got := u.shr(1); got != (u128{hi: 0, lo: 1<<63 | 1<<62}) {
		t.Errorf("shr = %+v", got)
	}
	if got := u.shl(64); got != (u128{hi: 1 << 63}) {
		t.Errorf("shl64 = %+v", got)
	}
	if got := u.shr(64); got != (u128{lo: 1}) {
		t.Errorf("shr64 = %+v", got)
	}
	if got := u128Ones(70); got != (u128{hi: 63, lo: ^uint64(0)}) {
		t.Errorf("ones70 = %+v", got)
	}
}

func TestPickFree(t *testing.T) {
	cidr := pfx("10.244.0.0/16")
	// Where "n1" starts scanning in a /16 split in /24s.
	sp := newSpace(cidr, 24)
	start := sp.subnet(sp.start("n1"))
	next := sp.subnet((sp.start("n1") + 1) % sp.n)
	tests := []struct {
		name string
		cidr netip.Prefix
		mask int
		t    Table
		node string
		want netip.Prefix
		err  string
	}{
		{name: "empty table: hash start", cidr: cidr, mask: 24, t: table(), node: "n1", want: start},
		{name: "own subnet kept", cidr: cidr, mask: 24, t: table("n1", "10.244.9.0/24"), node: "n1", want: pfx("10.244.9.0/24")},
		{name: "own subnet reserved kept", cidr: cidr, mask: 24, t: func() Table {
			t := table("n1", "10.244.9.0/24")
			t.Reserved[pfx("10.244.9.0/24")] = "n1"
			return t
		}(), node: "n1", want: pfx("10.244.9.0/24")},
		{name: "own subnet of other size ignored", cidr: cidr, mask: 24, t: table("n1", "10.244.9.0/25"), node: "n1", want: start},
		{name: "own subnet outside cidr ignored", cidr: cidr, mask: 24, t: table("n1", "10.9.9.0/24"), node: "n1", want: start},
		{name: "start taken: next", cidr: cidr, mask: 24, t: table("other", start.String()), node: "n1", want: next},
		{name: "start held by reserved only", cidr: cidr, mask: 24, t: Table{Reserved: map[netip.Prefix]string{start: "dead"}}, node: "n1", want: next},
		{name: "larger owner skipped as a whole", cidr: pfx("10.244.0.0/22"), mask: 24, t: table("a", "10.244.0.0/23", "b", "10.244.3.0/24"), node: "n1", want: pfx("10.244.2.0/24")},
		{name: "smaller owner blocks its /24", cidr: pfx("10.244.0.0/23"), mask: 24, t: table("a", "10.244.0.128/25"), node: "n1", want: pfx("10.244.1.0/24")},
		{name: "wraps around", cidr: pfx("10.244.0.0/22"), mask: 24, t: table("a", "10.244.1.0/24", "b", "10.244.2.0/24", "c", "10.244.3.0/24"), node: "n1", want: pfx("10.244.0.0/24")},
		{name: "owners outside cidr ignored", cidr: pfx("10.244.0.0/23"), mask: 24, t: table("a", "10.0.0.0/16", "b", "10.244.1.0/24", "c", "fd00::/64", "d", "10.244.2.0/24"), node: "n1", want: pfx("10.244.0.0/24")},
		{name: "owner holding whole cidr: full", cidr: pfx("10.244.0.0/23"), mask: 24, t: table("a", "10.244.0.0/16"), node: "n1", err: "cluster CIDR 10.244.0.0/23 has no free /24 subnet left"},
		{name: "full", cidr: pfx("10.244.0.0/23"), mask: 24, t: table("a", "10.244.0.0/24", "b", "10.244.1.0/24"), node: "n1", err: "cluster CIDR 10.244.0.0/23 has no free /24 subnet left"},
		{name: "cidr equals mask", cidr: pfx("10.244.0.0/24"), mask: 24, t: table(), node: "n1", want: pfx("10.244.0.0/24")},
		{name: "ipv6", cidr: pfx("fd00::/62"), mask: 64, t: table("a", "fd00::/64", "b", "fd00:0:0:1::/64", "c", "fd00:0:0:2::/64"), node: "n1", want: pfx("fd00:0:0:3::/64")},
		{name: "ipv6 huge space", cidr: pfx("fd00::/32"), mask: 95, t: table(), node: "n1", want: newSpace(pfx("fd00::/32"), 95).subnet(newSpace(pfx("fd00::/32"), 95).start("n1"))},
		{name: "bad mask", cidr: cidr, mask: 31, t: table(), node: "n1", err: "pick subnet: node subnet size /31 does not fit cluster CIDR 10.244.0.0/16; use a size between /16 and /30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickFree(tt.cidr, tt.mask, tt.t, tt.node)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPickFreeErrFull(t *testing.T) {
	_, err := PickFree(pfx("10.244.0.0/24"), 24, table("a", "10.244.0.0/24"), "b")
	if !errors.Is(err, ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	_, err = PickFree(pfx("10.244.0.0/24"), 31, table(), "b")
	if err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("bad mask err = %v, want a non-ErrFull error", err)
	}
}

// Different nodes start at different offsets, so they mostly pick
// different subnets from an empty table.
func TestPickFreeSpreads(t *testing.T) {
	seen := map[netip.Prefix]int{}
	for i := range 50 {
		p, err := PickFree(pfx("10.244.0.0/16"), 24, Table{}, nodeName(i))
		if err != nil {
			t.Fatal(err)
		}
		seen[p]++
	}
	if len(seen) < 40 {
		t.Errorf("50 nodes picked only %d distinct subnets of 256", len(seen))
	}
}

func TestFirstFree(t *testing.T) {
	tests := []struct {
		taken []span
		n     uint64
		start uint64
		want  uint64
		ok    bool
	}{
		{nil, 8, 5, 5, true},
		{[]span{{5, 5}}, 8, 5, 6, true},
		{[]span{{5, 7}}, 8, 5, 0, true},
		{[]span{{0, 1}, {5, 7}}, 8, 6, 2, true},
		{[]span{{0, 3}, {4, 7}}, 8, 6, 0, false},
		{[]span{{0, 7}}, 8, 0, 0, false},
		{[]span{{1, 7}}, 8, 3, 0, true},
		{[]span{{2, 3}}, 8, 0, 0, true},
		{[]span{{0, 0}}, 1, 0, 0, false},
		{nil, 1, 0, 0, true},
	}
	for _, tt := range tests {
		got, ok := firstFree(tt.taken, tt.n, tt.start)
		if got != tt.want || ok != tt.ok {
			t.Errorf("firstFree(%v, %d, %d) = %d, %v; want %d, %v", tt.taken, tt.n, tt.start, got, ok, tt.want, tt.ok)
		}
	}
}
