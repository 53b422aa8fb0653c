package mesh

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/mesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestDesired(t *testing.T) {
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	k3, _ := wgtypes.GeneratePrivateKey()
	member := func(name, state string, key wgtypes.Key, addr string) Member {
		return Member{Name: name, State: state, Addr: netip.MustParseAddr(addr), Meta: Meta{Addr: addr, WGKey: key.PublicKey().String(), WGPort: 51820}}
	}
	sub := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	subnets := map[string]netip.Prefix{"a": sub("10.244.1.0/24"), "b": sub("10.244.2.0/24"), "c": sub("10.244.3.0/24"), "d": sub("10.244.4.0/24")}
	src := netip.MustParseAddr("10.244.1.1")

	tests := []struct {
		name    string
		members []Member
		subnets map[string]netip.Prefix
		src     netip.Addr
		want    Topology
	}{
		{
			name: "alive and suspect peers, self/dead/left skipped",
			members: []Member{
				member("a", StateAlive, k1, "192.0.2.1"),
				member("c", StateSuspect, k3, "192.0.2.3"),
				member("b", StateAlive, k2, "192.0.2.2"),
				member("d", StateDead, k2, "192.0.2.4"),
				member("e", StateLeft, k2, "192.0.2.5"),
			},
			subnets: subnets, src: src,
			want: Topology{
				Peers: []wg.Peer{
					{Name: "b", PublicKey: k2.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: []netip.Prefix{sub("10.244.2.0/24")}, Keepalive: 25 * time.Second},
					{Name: "c", PublicKey: k3.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.3:51820"), AllowedIPs: []netip.Prefix{sub("10.244.3.0/24")}, Keepalive: 25 * time.Second},
				},
				Routes: []wg.Route{{Dst: sub("10.244.2.0/24"), Src: src}, {Dst: sub("10.244.3.0/24"), Src: src}},
			},
		},
		{
			name:    "member without subnet or key is no peer",
			members: []Member{member("b", StateAlive, k2, "192.0.2.2"), {Name: "c", State: StateAlive, Meta: Meta{Addr: "192.0.2.3"}}},
			subnets: map[string]netip.Prefix{"c": sub("10.244.3.0/24")}, src: src,
			want: Topology{},
		},
		{
			name:    "no own subnet yet: peers but no routes",
			members: []Member{member("b", StateAlive, k2, "192.0.2.2")},
			subnets: subnets,
			want: Topology{Peers: []wg.Peer{
				{Name: "b", PublicKey: k2.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: []netip.Prefix{sub("10.244.2.0/24")}, Keepalive: 25 * time.Second},
			}},
		},
	}
	// A member that failed a moment ago keeps its peer and route for the
	// grace; one that left, or failed longer ago, does not.
	now := time.Unix(1000, 0)
	dead := func(name string, key wgtypes.Key, addr string, ago time.Duration) Member {
		m := member(name, StateDead, key, addr)
		m.Since = now.Add(-ago)
		return m
	}
	left := member("d", StateLeft, k2, "192.0.2.4")
	left.Since = now.Add(-time.Second)
	graced := Desired("a", []Member{dead("b", k2, "192.0.2.2", 2*time.Second), dead("c", k3, "192.0.2.3", 20*time.Second), left},
		subnets, src, TopologyOptions{Keepalive: 25 * time.Second, DeadGrace: 15 * time.Second, Now: now})
	wantGraced := Topology{
		Peers:  []wg.Peer{{Name: "b", PublicKey: k2.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), AllowedIPs: []netip.Prefix{sub("10.244.2.0/24")}, Keepalive: 25 * time.Second}},
		Routes: []wg.Route{{Dst: sub("10.244.2.0/24"), Src: src}},
	}
	if diff := cmp.Diff(wantGraced, graced, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("Desired() with a dead grace (-want +got):\n%s", diff)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Desired("a", tt.members, tt.subnets, tt.src, TopologyOptions{Keepalive: 25 * time.Second})
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Desired() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
