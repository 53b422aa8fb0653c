package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// chainTexts summarizes a model as chain name -> header + rule texts.
func chainTexts(m Model) map[string][]string {
	out := map[string][]string{}
	for _, c := range m.Chains {
		lines := []string{}
		if c.BaseChain() {
			lines = append(lines, c.Type+" "+c.Hook+" "+priorityText(c.Hook, c.Priority)+" "+policyText(c.Policy))
		}
		for _, r := range c.Rules {
			lines = append(lines, r.Text)
		}
		out[c.Name] = lines
	}
	return out
}

func TestRuleset(t *testing.T) {
	fwdHead := "filter forward filter accept"
	postHead := "nat postrouting srcnat accept"
	tests := []struct {
		name string
		cfg  Config
		want map[string][]string
	}{
		{
			name: "ipv4 with bridge and wireguard",
			cfg: Config{
				ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
				PodSubnet:   netip.MustParsePrefix("10.244.3.0/24"),
				Bridge:      "netloom-br", WGIface: "netloom0",
			},
			want: map[string][]string{
				"forward": {fwdHead,
					"ct state established,related accept",
					`iifname "netloom-br" accept`, `oifname "netloom-br" accept`,
					`iifname "netloom0" accept`, `oifname "netloom0" accept`},
				"postrouting": {postHead,
					"ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"},
			},
		},
		{
			name: "cidr with host bits is masked",
			cfg:  Config{ClusterCIDR: netip.MustParsePrefix("10.244.7.9/16")},
			want: map[string][]string{
				"forward":     {fwdHead, "ct state established,related accept"},
				"postrouting": {postHead, "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"},
			},
		},
		{
			name: "ipv6 cluster",
			cfg:  Config{ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"), WGIface: "wg-nl"},
			want: map[string][]string{
				"forward": {fwdHead, "ct state established,related accept",
					`iifname "wg-nl" accept`, `oifname "wg-nl" accept`},
				"postrouting": {postHead, "ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 masquerade"},
			},
		},
		{
			name: "no cidr: no masquerade, chains still there",
			cfg:  Config{Bridge: "br0"},
			want: map[string][]string{
				"forward": {fwdHead, "ct state established,related accept",
					`iifname "br0" accept`, `oifname "br0" accept`},
				"postrouting": {postHead},
			},
		},
		{
			name: "single address cidr has no mask",
			cfg:  Config{ClusterCIDR: netip.MustParsePrefix("10.1.2.3/32")},
			want: map[string][]string{
				"forward":     {fwdHead, "ct state established,related accept"},
				"postrouting": {postHead, "ip saddr 10.1.2.3 ip daddr != 10.1.2.3 masquerade"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Ruleset(tt.cfg)
			if m.Family != "inet" || m.Table != "netloom" {
				t.Errorf("table = %s %s, want inet netloom", m.Family, m.Table)
			}
			if diff := cmp.Diff(tt.want, chainTexts(m)); diff != "" {
				t.Errorf("Ruleset(%+v) chains (-want +got):\n%s", tt.cfg, diff)
			}
			if err := m.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// The expressions of the masquerade rule, spelled out: what nft itself
// generates for "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"
// in an inet table (see `nft --debug=netlink`).
func TestMasqueradeExprs(t *testing.T) {
	m := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")})
	post, ok := m.Chain(ChainPostrouting)
	if !ok || len(post.Rules) != 1 {
		t.Fatalf("postrouting chain = %+v, want one rule", post)
	}
	mask := []byte{255, 255, 0, 0}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 244, 0, 0}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 244, 0, 0}},
		&expr.Masq{},
	}
	if diff := cmp.Diff(want, post.Rules[0].Exprs); diff != "" {
		t.Errorf("masquerade exprs (-want +got):\n%s", diff)
	}
}

func TestPrefixMatchIPv6Offsets(t *testing.T) {
	p := netip.MustParsePrefix("fd00::/8")
	for _, tt := range []struct {
		field  AddrField
		offset uint32
	}{{Saddr, 8}, {Daddr, 24}} {
		f := PrefixMatch(tt.field, p, false)
		pl, ok := f.Exprs[0].(*expr.Payload)
		if !ok || pl.Offset != tt.offset || pl.Len != 16 {
			t.Errorf("field %d: payload %+v, want offset %d len 16", tt.field, f.Exprs[0], tt.offset)
		}
		bw := f.Exprs[1].(*expr.Bitwise)
		if diff := cmp.Diff(append([]byte{0xff}, make([]byte, 15)...), bw.Mask); diff != "" {
			t.Errorf("mask (-want +got):\n%s", diff)
		}
	}
}

func TestPriorityText(t *testing.T) {
	tests := []struct {
		hook string
		prio int32
		want string
	}{
		{"forward", 0, "filter"},
		{"postrouting", 100, "srcnat"},
		{"prerouting", -100, "dstnat"},
		{"forward", -100, "-100"}, // dstnat is not a name on forward
		{"input", 100, "srcnat"},
		{"forward", 5, "filter + 5"},
		{"prerouting", -105, "dstnat - 5"},
		{"forward", -150, "mangle"},
		{"forward", 42, "security - 8"},
		{"forward", 1000, "1000"},
	}
	for _, tt := range tests {
		if got := priorityText(tt.hook, tt.prio); got != tt.want {
			t.Errorf("priorityText(%s, %d) = %q, want %q", tt.hook, tt.prio, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")})
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(Ruleset) = %v", err)
	}
	tests := []struct {
		name string
		edit func(m *Model)
		want string
	}{
		{"family", func(m *Model) { m.Family = "bridge" }, `unsupported table family "bridge"`},
		{"hook", func(m *Model) { m.Chains[0].Hook = "sideways" }, `unknown hook "sideways"`},
		{"type", func(m *Model) { m.Chains[0].Type = "mangle" }, `unknown type "mangle"`},
		{"policy", func(m *Model) { m.Chains[0].Policy = "reject" }, `unknown policy "reject"`},
		{"duplicate chain", func(m *Model) { m.Chains = append(m.Chains, m.Chains[0]) }, `defined twice`},
		{"jump target", func(m *Model) {
			m.Chains[0].Rules = append(m.Chains[0].Rules, Rule{Text: "jump nowhere",
				Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "nowhere"}}})
		}, `target chain "nowhere" missing`},
		{"lookup set", func(m *Model) {
			m.Chains[0].Rules = append(m.Chains[0].Rules, Rule{Text: "ip daddr @nope",
				Exprs: []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: "nope"}}})
		}, `set "nope" missing`},
		{"set key", func(m *Model) { m.Sets = []Set{{Name: "s", Type: "?"}} }, `key type missing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")})
			tt.edit(&m)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// testSetModel is a model with a set, a regular chain and a jump: the shape
// NetworkPolicy and service NAT will take. Used by the golden and root tests.
func testSetModel() Model {
	m := Ruleset(Config{
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		Bridge:      "nl-br", WGIface: "nl-wg",
	})
	blocked := netip.MustParseAddr("192.0.2.7")
	m.Sets = append(m.Sets, Set{
		Name: "blocked",
		Type: "ipv4_addr",
		Elements: []Element{
			{Text: "192.0.2.7", Kernel: []nftables.SetElement{{Key: blocked.AsSlice()}}},
			{Text: "192.0.2.9", Kernel: []nftables.SetElement{{Key: netip.MustParseAddr("192.0.2.9").AsSlice()}}},
		},
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr},
	})
	m.Chains = append(m.Chains, Chain{
		Name: "policy",
		Rules: []Rule{NewRule(
			ipFamily(blocked),
			Frag{Text: "ip daddr", Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			}},
			Frag{Text: "@blocked", Exprs: []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: "blocked"}}},
			Frag{Text: "drop", Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}},
		)},
	})
	for i := range m.Chains {
		if m.Chains[i].Name == ChainForward {
			m.Chains[i].Rules = append(m.Chains[i].Rules, Rule{Text: "jump policy",
				Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "policy"}}})
		}
	}
	return m
}

func TestGolden(t *testing.T) {
	tests := []struct {
		file string
		m    Model
	}{
		{"ruleset-ipv4.golden", Ruleset(Config{
			ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
			PodSubnet:   netip.MustParsePrefix("10.244.3.0/24"),
			Bridge:      "netloom-br", WGIface: "netloom0",
		})},
		{"ruleset-ipv6.golden", Ruleset(Config{
			ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"),
			Bridge:      "netloom-br", WGIface: "netloom0",
		})},
		{"sets-and-jumps.golden", testSetModel()},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := tt.m.String()
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s differs (-want +got), run go test -update if intended:\n%s", path, diff)
			}
		})
	}
}

// String must not depend on the order chains and sets were appended in.
func TestStringSorted(t *testing.T) {
	m := testSetModel()
	rev := m
	rev.Chains = nil
	for i := len(m.Chains) - 1; i >= 0; i-- {
		rev.Chains = append(rev.Chains, m.Chains[i])
	}
	rev.Sets = []Set{m.Sets[0]}
	rev.Sets[0].Elements = []Element{m.Sets[0].Elements[1], m.Sets[0].Elements[0]}
	if diff := cmp.Diff(m.String(), rev.String()); diff != "" {
		t.Errorf("String depends on order (-want +got):\n%s", diff)
	}
}
