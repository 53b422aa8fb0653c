package wg

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func nets(ss ...string) []net.IPNet {
	var out []net.IPNet
	for _, s := range ss {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			panic(err)
		}
		out = append(out, *n)
	}
	return out
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func udp(s string) *net.UDPAddr {
	return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

func dur(d time.Duration) *time.Duration { return &d }

func TestPeerConfig(t *testing.T) {
	a, b, c := testKey(1), testKey(2), testKey(3)
	// a running peer as wgctrl reports it
	curA := wgtypes.Peer{
		PublicKey:                   a,
		Endpoint:                    udp("192.0.2.1:51820"),
		PersistentKeepaliveInterval: 25 * time.Second,
		AllowedIPs:                  nets("10.244.1.0/24"),
		LastHandshakeTime:           time.Unix(1700000000, 0),
		ReceiveBytes:                100,
	}
	wantA := Peer{
		Name:       "a",
		PublicKey:  a,
		Endpoint:   netip.MustParseAddrPort("192.0.2.1:51820"),
		AllowedIPs: pfx("10.244.1.0/24"),
		Keepalive:  25 * time.Second,
	}
	tests := []struct {
		name        string
		current     []wgtypes.Peer
		desired     []Peer
		want        wgtypes.Config
		wantChanged bool
	}{
		{
			name: "empty to empty",
		},
		{
			name:        "unchanged peer is not mentioned",
			current:     []wgtypes.Peer{curA},
			desired:     []Peer{wantA},
			wantChanged: false,
		},
		{
			name:    "unchanged despite unmasked, unsorted, duplicate, v4-mapped input",
			current: []wgtypes.Peer{{PublicKey: a, Endpoint: udp("[::ffff:192.0.2.1]:51820"), AllowedIPs: nets("10.244.1.0/24", "fd00::/64")}},
			desired: []Peer{{PublicKey: a, Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"),
				AllowedIPs: pfx("fd00::1/64", "10.244.1.7/24", "10.244.1.0/24")}},
		},
		{
			name:    "keepalive sub-second part ignored",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.Keepalive = 25*time.Second + 300*time.Millisecond; return p }()},
		},
		{
			name:    "new peer added in full",
			desired: []Peer{wantA},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey:                   a,
				Endpoint:                    udp("192.0.2.1:51820"),
				PersistentKeepaliveInterval: dur(25 * time.Second),
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  nets("10.244.1.0/24"),
			}}},
			wantChanged: true,
		},
		{
			name:    "new peer without endpoint and keepalive",
			desired: []Peer{{PublicKey: b, AllowedIPs: pfx("10.244.2.0/24")}},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey:                   b,
				PersistentKeepaliveInterval: dur(0),
				ReplaceAllowedIPs:           true,
				AllowedIPs:                  nets("10.244.2.0/24"),
			}}},
			wantChanged: true,
		},
		{
			name:        "unknown peer removed",
			current:     []wgtypes.Peer{curA, {PublicKey: b}},
			desired:     []Peer{wantA},
			want:        wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: b, Remove: true}}},
			wantChanged: true,
		},
		{
			name:        "all removed",
			current:     []wgtypes.Peer{curA, {PublicKey: b}},
			want:        wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: a, Remove: true}, {PublicKey: b, Remove: true}}},
			wantChanged: true,
		},
		{
			name:    "endpoint changed: only endpoint, update only",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.Endpoint = netip.MustParseAddrPort("192.0.2.9:51821"); return p }()},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey: a, UpdateOnly: true, Endpoint: udp("192.0.2.9:51821"),
			}}},
			wantChanged: true,
		},
		{
			name:    "desired endpoint unknown keeps the roamed one",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.Endpoint = netip.AddrPort{}; return p }()},
		},
		{
			name:    "allowed IPs changed: replaced",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.AllowedIPs = pfx("10.244.1.0/24", "10.96.0.10/32"); return p }()},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey: a, UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: nets("10.96.0.10/32", "10.244.1.0/24"),
			}}},
			wantChanged: true,
		},
		{
			name:    "allowed IPs emptied",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.AllowedIPs = nil; return p }()},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey: a, UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{},
			}}},
			wantChanged: true,
		},
		{
			name:    "keepalive turned off",
			current: []wgtypes.Peer{curA},
			desired: []Peer{func() Peer { p := wantA; p.Keepalive = 0; return p }()},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey: a, UpdateOnly: true, PersistentKeepaliveInterval: dur(0),
			}}},
			wantChanged: true,
		},
		{
			name:    "mixed: remove, keep, change, add; sorted by key, removals first",
			current: []wgtypes.Peer{{PublicKey: c, AllowedIPs: nets("10.244.3.0/24")}, curA, {PublicKey: b, AllowedIPs: nets("10.244.2.0/24")}},
			desired: []Peer{
				{PublicKey: testKey(4), AllowedIPs: pfx("10.244.4.0/24")},
				{PublicKey: c, AllowedIPs: pfx("10.244.3.0/24", "10.244.2.0/24")},
				wantA,
			},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{
				{PublicKey: b, Remove: true},
				{PublicKey: c, UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: nets("10.244.2.0/24", "10.244.3.0/24")},
				{PublicKey: testKey(4), PersistentKeepaliveInterval: dur(0), ReplaceAllowedIPs: true, AllowedIPs: nets("10.244.4.0/24")},
			}},
			wantChanged: true,
		},
		{
			name:    "duplicate desired key: first wins",
			desired: []Peer{{PublicKey: b, AllowedIPs: pfx("10.244.2.0/24")}, {PublicKey: b, AllowedIPs: pfx("10.244.9.0/24")}},
			want: wgtypes.Config{Peers: []wgtypes.PeerConfig{{
				PublicKey: b, PersistentKeepaliveInterval: dur(0), ReplaceAllowedIPs: true, AllowedIPs: nets("10.244.2.0/24"),
			}}},
			wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := PeerConfig(tt.current, tt.desired)
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PeerConfig() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteDiff(t *testing.T) {
	r := func(dst, src string) Route {
		rt := Route{Dst: netip.MustParsePrefix(dst)}
		if src != "" {
			rt.Src = netip.MustParseAddr(src)
		}
		return rt
	}
	tests := []struct {
		name             string
		current, desired []Route
		add, del         []Route
	}{
		{name: "empty"},
		{
			name:    "add all",
			desired: []Route{r("10.244.2.0/24", "10.244.1.1"), r("10.244.0.0/24", "10.244.1.1")},
			add:     []Route{r("10.244.0.0/24", "10.244.1.1"), r("10.244.2.0/24", "10.244.1.1")},
		},
		{
			name:    "delete all",
			current: []Route{r("10.244.2.0/24", "10.244.1.1"), r("fd00:2::/64", "")},
			del:     []Route{r("10.244.2.0/24", "10.244.1.1"), r("fd00:2::/64", "")},
		},
		{
			name:    "unchanged",
			current: []Route{r("10.244.2.0/24", "10.244.1.1"), r("10.244.3.0/24", "10.244.1.1")},
			desired: []Route{r("10.244.3.0/24", "10.244.1.1"), r("10.244.2.0/24", "10.244.1.1")},
		},
		{
			name:    "unmasked and v4-mapped desired are normalized",
			current: []Route{r("10.244.2.0/24", "10.244.1.1")},
			desired: []Route{r("10.244.2.77/24", "::ffff:10.244.1.1")},
		},
		{
			name:    "src change is an add (replace), not a delete",
			current: []Route{r("10.244.2.0/24", "10.244.1.1")},
			desired: []Route{r("10.244.2.0/24", "10.244.5.1")},
			add:     []Route{r("10.244.2.0/24", "10.244.5.1")},
		},
		{
			name:    "src dropped",
			current: []Route{r("10.244.2.0/24", "10.244.1.1")},
			desired: []Route{r("10.244.2.0/24", "")},
			add:     []Route{r("10.244.2.0/24", "")},
		},
		{
			name:    "mixed",
			current: []Route{r("10.244.2.0/24", "10.244.1.1"), r("10.244.3.0/24", "10.244.1.1"), r("10.244.4.0/24", "")},
			desired: []Route{r("10.244.3.0/24", "10.244.1.1"), r("10.244.5.0/24", "10.244.1.1"), r("10.244.4.0/24", "10.244.1.1")},
			add:     []Route{r("10.244.4.0/24", "10.244.1.1"), r("10.244.5.0/24", "10.244.1.1")},
			del:     []Route{r("10.244.2.0/24", "10.244.1.1")},
		},
		{
			name:    "same prefix length different families sorted v4 first",
			desired: []Route{r("fd00:3::/64", ""), r("10.244.3.0/24", "")},
			add:     []Route{r("10.244.3.0/24", ""), r("fd00:3::/64", "")},
		},
		{
			name:    "duplicate desired dst: first wins",
			desired: []Route{r("10.244.3.0/24", "10.244.1.1"), r("10.244.3.0/24", "10.244.9.9")},
			add:     []Route{r("10.244.3.0/24", "10.244.1.1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			add, del := RouteDiff(tt.current, tt.desired)
			if diff := cmp.Diff(tt.add, add, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("add mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.del, del, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("del mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
