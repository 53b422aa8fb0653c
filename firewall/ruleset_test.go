package firewall

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft"
	"github.com/netloom/netloom/nft/nfttest"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// chainTexts summarizes a model as chain name -> header + rule texts.
func chainTexts(m nft.Model) map[string][]string {
	out := map[string][]string{}
	for _, c := range m.Chains {
		lines := []string{}
		if c.BaseChain() {
			lines = append(lines, fmt.Sprintf("%s %s %d %s", c.Type, c.Hook, c.Priority, c.Policy))
		}
		for _, r := range c.Rules {
			lines = append(lines, r.Text)
		}
		out[c.Name] = lines
	}
	return out
}

func TestRuleset(t *testing.T) {
	fwdHead := "filter forward 0 accept"
	postHead := "nat postrouting 100 accept"
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

// goldenCases are the rulesets of the golden files under testdata/.
var goldenCases = []struct {
	file string
	m    nft.Model
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
}

func TestGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.file, func(t *testing.T) {
			nfttest.CheckGolden(t, filepath.Join("testdata", tt.file), tt.m.String(), *update)
		})
	}
}

// Kernel tests: every one works in network namespaces it creates and
// deletes (see nfttest); nothing is ever added to the test process's own
// namespace.

// nsApplier returns an Applier that opens its own connection in ns.
func nsApplier(t *testing.T, ns string) *nft.Applier {
	t.Helper()
	a := nft.NewApplier(nft.WithNetNS(nfttest.NSHandle(t, ns)))
	t.Cleanup(func() { a.Close() })
	return a
}

// Every golden ruleset, applied: nft's own listing of the table is the
// golden file, so the expressions sent decode to the rules it shows.
func TestGoldenInKernel(t *testing.T) {
	nfttest.NeedRoot(t)
	ns := nfttest.NewNS(t)
	a := nsApplier(t, ns)
	for _, tt := range goldenCases {
		if err := a.Apply(tt.m); err != nil {
			t.Fatalf("%s: Apply: %v", tt.file, err)
		}
		want, err := os.ReadFile(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		nfttest.CheckListing(t, ns, TableFamily, TableName, string(want))
	}
}

// Real packets: a pod-like address in the cluster CIDR pings an outside
// host that has no route back to the cluster CIDR. Only masquerading on the
// router makes the reply come back.
//
//	pod (10.244.1.5/24) --veth-- router (10.244.1.1, 192.0.2.1) --veth-- outside (192.0.2.2/24)
func TestMasqueradePackets(t *testing.T) {
	nfttest.NeedRoot(t, "ping")
	run := nfttest.Run
	pod, router, outside := nfttest.NewNS(t), nfttest.NewNS(t), nfttest.NewNS(t)
	run(t, "ip", "-n", pod, "link", "add", "p0", "type", "veth", "peer", "name", "r0", "netns", router)
	run(t, "ip", "-n", router, "link", "add", "r1", "type", "veth", "peer", "name", "o0", "netns", outside)
	run(t, "ip", "-n", pod, "addr", "add", "10.244.1.5/24", "dev", "p0")
	run(t, "ip", "-n", pod, "link", "set", "p0", "up")
	run(t, "ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1")
	run(t, "ip", "-n", router, "addr", "add", "10.244.1.1/24", "dev", "r0")
	run(t, "ip", "-n", router, "addr", "add", "192.0.2.1/24", "dev", "r1")
	run(t, "ip", "-n", router, "link", "set", "r0", "up")
	run(t, "ip", "-n", router, "link", "set", "r1", "up")
	run(t, "ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(t, "ip", "-n", outside, "addr", "add", "192.0.2.2/24", "dev", "o0")
	run(t, "ip", "-n", outside, "link", "set", "o0", "up")

	ping := func(wait string) error {
		return exec.Command("ip", "netns", "exec", pod, "ping", "-c", "1", "-W", wait, "192.0.2.2").Run()
	}
	// Control: without the table the outside host cannot answer.
	if err := ping("1"); err == nil {
		t.Fatal("ping went through without masquerading; the test topology is wrong")
	}

	a := nsApplier(t, router)
	if err := a.Apply(Ruleset(Config{ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), Bridge: "r0"})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = ping("2"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("ping from pod to outside with masquerading: %v", err)
	}
	if _, lookErr := exec.LookPath("conntrack"); lookErr == nil {
		out, _ := exec.Command("ip", "netns", "exec", router, "conntrack", "-L", "-p", "icmp").CombinedOutput()
		// original src is the pod, the reply goes to the router's address.
		if !strings.Contains(string(out), "src=10.244.1.5 dst=192.0.2.2") || !strings.Contains(string(out), "src=192.0.2.2 dst=192.0.2.1") {
			t.Errorf("conntrack shows no masqueraded flow:\n%s", out)
		}
	}
}
