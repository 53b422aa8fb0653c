package nft

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/netloom/netloom/nft/nfttest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

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
	ok := baseModel(netip.MustParsePrefix("10.244.0.0/16"))
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(baseModel) = %v", err)
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
			m := baseModel(netip.MustParsePrefix("10.244.0.0/16"))
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
// of NetworkPolicy's and the service proxy's fragments. Used by the golden
// and root tests.
func testSetModel() Model {
	m := baseModel(netip.MustParsePrefix("10.244.0.0/16"), "nl-br", "nl-wg")
	blocked := netip.MustParseAddr("192.0.2.7")
	m.Sets = append(m.Sets, Set{
		Name: "blocked",
		Type: "ipv4_addr",
		Elements: []Element{
			NewElement("192.0.2.7", nftables.SetElement{Key: blocked.AsSlice()}),
			NewElement("192.0.2.9", nftables.SetElement{Key: netip.MustParseAddr("192.0.2.9").AsSlice()}),
		},
		Spec: nftables.Set{KeyType: nftables.TypeIPAddr},
	})
	m.Chains = append(m.Chains, Chain{
		Name: "policy",
		Rules: []Rule{NewRule(
			IPFamily(blocked),
			Frag{Text: "ip daddr", Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			}},
			Frag{Text: "@blocked", Exprs: []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: "blocked"}}},
			Frag{Text: "drop", Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}},
		)},
	})
	for i := range m.Chains {
		if m.Chains[i].Name == chainForward {
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
		{"sets-and-jumps.golden", testSetModel()},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			nfttest.CheckGolden(t, filepath.Join("testdata", tt.file), tt.m.String(), *update)
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
