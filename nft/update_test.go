package nft

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func elem(text string, key ...byte) Element {
	return NewElement(text, nftables.SetElement{Key: key})
}

func TestPlanUpdate(t *testing.T) {
	base := testSetModel()
	tests := []struct {
		name       string
		edit       func(m *Model)
		wantFull   string // substring of the reason; "" = incremental
		wantChange string
	}{
		{"same", func(m *Model) {}, "", "chains +0 -0 ~0, sets +0 -0, elements +0 -0, counters +0 -0"},
		{"element added and removed", func(m *Model) {
			m.Sets[0].Elements = []Element{m.Sets[0].Elements[0], elem("192.0.2.8", 192, 0, 2, 8)}
		}, "", "chains +0 -0 ~0, sets +0 -0, elements +1 -1, counters +0 -0"},
		{"elements reordered", func(m *Model) {
			e := m.Sets[0].Elements
			m.Sets[0].Elements = []Element{e[1], e[0]}
		}, "", "chains +0 -0 ~0, sets +0 -0, elements +0 -0, counters +0 -0"},
		{"rule changed", func(m *Model) {
			m.Chains[len(m.Chains)-1].Rules = nil
		}, "", "chains +0 -0 ~1, sets +0 -0, elements +0 -0, counters +0 -0"},
		{"chain, set and counter added", func(m *Model) {
			m.Chains = append(m.Chains, Chain{Name: "extra"})
			m.Sets = append(m.Sets, Set{Name: "s2", Type: "ipv4_addr", Spec: nftables.Set{KeyType: nftables.TypeIPAddr}})
			m.Counters = append(m.Counters, "c1")
		}, "", "chains +1 -0 ~0, sets +1 -0, elements +0 -0, counters +1 -0"},
		{"chain and set removed", func(m *Model) {
			m.Sets = nil
			m.Chains = m.Chains[:len(m.Chains)-1] // the chain that looked the set up
			for i := range m.Chains {
				if m.Chains[i].Name == chainForward {
					m.Chains[i].Rules = m.Chains[i].Rules[:len(m.Chains[i].Rules)-1]
				}
			}
		}, "", "chains +0 -1 ~1, sets +0 -1, elements +0 -0, counters +0 -0"},
		{"base chain priority", func(m *Model) { m.Chains[0].Priority++ }, "priority", ""},
		{"set type", func(m *Model) { m.Sets[0].Spec.Interval = true; m.Sets[0].Flags = []string{"interval"} }, "set blocked", ""},
		{"table", func(m *Model) { m.Table = "other" }, "table", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testSetModel()
			tt.edit(&m)
			u, why := planUpdate(base, m)
			if tt.wantFull != "" {
				if !strings.Contains(why, tt.wantFull) {
					t.Errorf("reason = %q, want %q", why, tt.wantFull)
				}
				return
			}
			if why != "" {
				t.Fatalf("full replacement: %s", why)
			}
			if diff := cmp.Diff(tt.wantChange, u.summary()); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a := baseModel(netip.MustParsePrefix("10.244.0.0/16"))
	b := Model{Family: "inet", Table: "ignored", Counters: []string{"c"},
		Chains: []Chain{{Name: "x"}}, Sets: []Set{{Name: "s", Type: "ipv4_addr", Spec: nftables.Set{KeyType: nftables.TypeIPAddr}}}}
	m := Merge(a, b)
	if m.Table != testTable || m.Family != testFamily || len(m.Chains) != 3 || len(m.Sets) != 1 || len(m.Counters) != 1 {
		t.Errorf("Merge = %+v", m)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if err := Merge(a, a).Validate(); err == nil || !strings.Contains(err.Error(), "defined twice") {
		t.Errorf("Validate of a doubled model = %v", err)
	}
}

func TestValidateCounters(t *testing.T) {
	m := baseModel(netip.Prefix{})
	m.Chains[0].Rules = append(m.Chains[0].Rules, Rule{Text: `counter name "nope"`,
		Exprs: []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: "nope"}}})
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), `counter "nope" missing`) {
		t.Errorf("Validate = %v", err)
	}
	m.Counters = []string{"nope"}
	if err := m.Validate(); err != nil {
		t.Errorf("Validate with the counter: %v", err)
	}
}

func TestCanonical(t *testing.T) {
	model := "table inet t {\n\tcounter c {\n\t\tpackets 0 bytes 0\n\t}\n\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.10, 10.0.0.9 }\n\t}\n\n\tchain a {\n\t\taccept\n\t}\n}\n"
	nft := "table inet t {\n\tchain a {\n\t\taccept\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.9,\n\t\t\t     10.0.0.10 }\n\t}\n\tcounter c {\n\t\tpackets 7 bytes 700\n\t}\n}\n"
	if diff := cmp.Diff(Canonical(model), Canonical(nft)); diff != "" {
		t.Errorf("Canonical differs (-model +nft):\n%s", diff)
	}
}
