package mesh

import (
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FuzzMemberMeta feeds the node metadata decoding (what memberlist hands
// toMember for every member, at most memberlist.MetaMaxSize bytes of a
// possibly hostile peer) and what is computed from it: the member's
// WireGuard peer (Desired) and its gossip address (gossipAddr). It never
// panics; metadata that decodes re-encodes to the same Meta; a member
// becomes a peer only with a valid key and a port in 1..65535, and the
// peer's endpoint is exactly the advertised address (without an IPv6 zone)
// and port.
func FuzzMemberMeta(f *testing.F) {
	key := "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	for _, m := range []Meta{
		{Addr: "192.0.2.2", WGKey: key, WGPort: 51820, Subnet: "10.244.2.0/24", Version: "0.1.0"},
		{Addr: "2001:db8::2", WGKey: key, WGPort: 51820},
		{Addr: "192.0.2.2", Leaving: true},
		{Addr: "fe80::1%eth0", WGKey: key, WGPort: 65535},
	} {
		b, err := encodeMeta(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte{192, 0, 2, 9})
	}
	for _, s := range []string{
		``,
		`null`,
		`{}`,
		`{"a":"192.0.2.2","k":"` + key + `","p":-1}`,
		`{"a":"192.0.2.2","k":"` + key + `","p":5.5}`,
		`{"a":"","k":"` + key + `","p":51820}`,
		`{"a":"not an address","k":"bm90IGEga2V5","p":"51820"}`,
		`{"a":"0.0.0.0","k":"` + key + `","p":51820,"l":true}`,
		`{"a":"192.0.2.2","a":"192.0.2.3"}`,
		`{"a":`,
		`[1,2]`,
	} {
		f.Add([]byte(s), []byte{192, 0, 2, 9})
		f.Add([]byte(s), []byte(nil))
	}
	subnet := netip.MustParsePrefix("10.244.2.0/24")
	src := netip.MustParseAddr("10.244.1.1")
	f.Fuzz(func(t *testing.T, meta, addr []byte) {
		if len(meta) > memberlist.MetaMaxSize {
			return // memberlist refuses larger metadata
		}
		n := &memberlist.Node{Name: "peer", Addr: net.IP(addr), Port: 7946, Meta: meta}
		m := toMember(n, StateAlive)
		var want Meta
		decodes := json.Unmarshal(meta, &want) == nil
		if m.Meta != want {
			t.Fatalf("toMember decoded %+v, json.Unmarshal %+v", m.Meta, want)
		}
		if decodes {
			b, err := json.Marshal(m.Meta)
			if err != nil {
				t.Fatalf("encode decoded meta: %v", err)
			}
			var again Meta
			if err := json.Unmarshal(b, &again); err != nil || again != m.Meta {
				t.Fatalf("meta does not round-trip: %+v -> %s -> %+v, %v", m.Meta, b, again, err)
			}
		}

		// The gossip address is something memberlist can dial. Not when
		// the advertised address has an IPv6 zone: netip accepts any zone,
		// "fe80::1%a]b" too, and the zone of another host's address names
		// one of its interfaces, not ours; such a member only makes itself
		// unreachable (see the report with this target).
		ga := gossipAddr(m)
		if a, err := netip.ParseAddr(m.Meta.Addr); err != nil || a.Zone() == "" {
			if _, port, err := net.SplitHostPort(ga); err != nil || port != "7946" {
				t.Fatalf("gossipAddr = %q: %v", ga, err)
			}
		}

		topo := Desired("self", []Member{m}, map[string]netip.Prefix{"peer": subnet}, src, TopologyOptions{Keepalive: 25 * time.Second, Now: time.Now()})
		if len(topo.Peers) == 0 {
			if len(topo.Routes) != 0 {
				t.Fatalf("routes %v without a peer", topo.Routes)
			}
			return
		}
		if len(topo.Peers) != 1 || len(topo.Routes) != 1 {
			t.Fatalf("one member gave %d peers and %d routes", len(topo.Peers), len(topo.Routes))
		}
		p := topo.Peers[0]
		k, err := wgtypes.ParseKey(m.Meta.WGKey)
		if err != nil || p.PublicKey != k {
			t.Fatalf("peer with key %v from meta key %q (%v)", p.PublicKey, m.Meta.WGKey, err)
		}
		if m.Meta.WGPort < 1 || m.Meta.WGPort > 65535 || strconv.Itoa(int(p.Endpoint.Port())) != strconv.Itoa(m.Meta.WGPort) {
			t.Fatalf("advertised port %d became endpoint %s", m.Meta.WGPort, p.Endpoint)
		}
		wantAddr, err := netip.ParseAddr(m.Meta.Addr)
		if err != nil {
			wantAddr = m.Addr
		}
		if p.Endpoint.Addr() != wantAddr.WithZone("") || !p.Endpoint.IsValid() {
			t.Fatalf("advertised address %q (member address %s) became endpoint %s", m.Meta.Addr, m.Addr, p.Endpoint)
		}
		if diff := cmp.Diff([]netip.Prefix{subnet}, p.AllowedIPs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Fatalf("allowed IPs (-want +got):\n%s", diff)
		}
	})
}
