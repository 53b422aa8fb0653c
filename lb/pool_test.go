package lb

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in      string
		want    Range
		wantErr string
	}{
		{in: "192.168.1.240/28", want: rng("192.168.1.241", "192.168.1.254")},
		{in: "192.168.1.0/24", want: rng("192.168.1.1", "192.168.1.254")},
		{in: "192.168.1.4/30", want: rng("192.168.1.5", "192.168.1.6")},
		{in: "192.168.1.4/31", want: rng("192.168.1.4", "192.168.1.5")},
		{in: "192.168.1.7/32", want: rng("192.168.1.7", "192.168.1.7")},
		{in: "fd00:10::/120", want: rng("fd00:10::", "fd00:10::ff")},
		{in: "::ffff:10.0.0.0/120", want: rng("10.0.0.1", "10.0.0.254")},
		{in: "10.0.0.5-10.0.0.9", want: rng("10.0.0.5", "10.0.0.9")},
		{in: " 10.0.0.5 - 10.0.0.9 ", want: rng("10.0.0.5", "10.0.0.9")},
		{in: "10.0.0.5-10.0.0.5", want: rng("10.0.0.5", "10.0.0.5")},
		{in: "fd00::1-fd00::1:0", want: rng("fd00::1", "fd00::1:0")},
		{in: "10.0.0.7", want: rng("10.0.0.7", "10.0.0.7")},
		{in: "10.0.0.9-10.0.0.1", wantErr: "range 10.0.0.9-10.0.0.1 starts after it ends"},
		{in: "10.0.0.1-fd00::1", wantErr: "range 10.0.0.1-fd00::1 mixes IPv4 and IPv6"},
		{in: "10.0.0.5/24", wantErr: "10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?"},
		{in: "10.0.0.0/33", wantErr: `"10.0.0.0/33" is not a CIDR; want e.g. 192.168.1.240/28`},
		{in: "10.0.0.1-x", wantErr: `"10.0.0.1-x" is not a range of addresses; want e.g. 192.168.1.240-192.168.1.250`},
		{in: "pool", wantErr: `"pool" is not a CIDR or a range; want e.g. 192.168.1.240/28 or 192.168.1.240-192.168.1.250`},
		{in: "", wantErr: "empty address; want a CIDR (192.168.1.240/28) or a range (192.168.1.240-192.168.1.250)"},
	}
	for _, tt := range tests {
		got, err := ParseRange(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseRange(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRange(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpOpts...); diff != "" {
			t.Errorf("ParseRange(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParsePool(t *testing.T) {
	p, err := ParsePool("blue", []string{"10.77.0.240/28", "10.77.1.1-10.77.1.3"}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := Pool{Name: "blue", AutoAssign: true, Ranges: []Range{rng("10.77.0.241", "10.77.0.254"), rng("10.77.1.1", "10.77.1.3")}}
	if diff := cmp.Diff(want, p, cmpOpts...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := p.Size(); got != 17 {
		t.Errorf("Size = %d, want 17", got)
	}
	if !p.Contains(ip("10.77.1.2")) || p.Contains(ip("10.77.1.4")) || p.Contains(ip("::ffff:10.77.1.5")) {
		t.Errorf("Contains wrong")
	}
	big := mustPool("v6", true, "fd00::/64")
	if got := big.Size(); got != ^uint64(0) {
		t.Errorf("Size of /64 = %d, want max", got)
	}

	errs := []struct {
		addrs []string
		want  string
	}{
		{[]string{"10.0.0.0/24", "10.0.0.9-10.0.0.1"}, "AddressPool blue: spec.addresses[1]: range 10.0.0.9-10.0.0.1 starts after it ends"},
		{[]string{"10.0.0.0/24", "10.0.0.9-10.0.1.1"}, "AddressPool blue: spec.addresses[1]: 10.0.0.9-10.0.1.1 overlaps spec.addresses[0] (10.0.0.1-10.0.0.254)"},
		{[]string{"nonsense"}, `AddressPool blue: spec.addresses[0]: "nonsense" is not a CIDR or a range; want e.g. 192.168.1.240/28 or 192.168.1.240-192.168.1.250`},
		{nil, "AddressPool blue: spec.addresses: no addresses; give at least one CIDR or range"},
	}
	for _, tt := range errs {
		_, err := ParsePool("blue", tt.addrs, true)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParsePool(%q) error = %v, want %q", tt.addrs, err, tt.want)
		}
		if fe, ok := err.(*FieldError); !ok || fe.Kind != PoolKind || fe.Name != "blue" {
			t.Errorf("ParsePool(%q) error is %T %+v, want *FieldError for the pool", tt.addrs, err, err)
		}
	}
}

func TestValidatePools(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	service := netip.MustParsePrefix("10.96.0.0/16")
	tests := []struct {
		name  string
		pools []Pool
		want  string
	}{
		{"ok", []Pool{mustPool("a", true, "10.77.0.240/28"), mustPool("b", true, "10.77.1.0-10.77.1.9"), mustPool("c", false, "fd00::/120")}, ""},
		{"pool overlaps pool", []Pool{mustPool("b", true, "10.77.0.250-10.77.0.252"), mustPool("a", true, "10.77.0.240/28")},
			"AddressPool b: spec.addresses[0]: 10.77.0.250-10.77.0.252 overlaps AddressPool a (10.77.0.241-10.77.0.254); pools must not share addresses"},
		{"cluster CIDR", []Pool{mustPool("a", true, "10.77.0.240/28"), mustPool("pods", true, "10.77.5.0/24", "10.244.7.0/24")},
			"AddressPool pods: spec.addresses[1]: 10.244.7.1-10.244.7.254 overlaps the cluster CIDR 10.244.0.0/16; use addresses of the hosts' network outside it"},
		{"service CIDR", []Pool{mustPool("s", true, "10.96.0.10")},
			"AddressPool s: spec.addresses[0]: 10.96.0.10 overlaps the service CIDR 10.96.0.0/16; use addresses of the hosts' network outside it"},
		{"v4 and v6 never overlap", []Pool{mustPool("a", true, "0.0.0.0/0"), mustPool("b", true, "::/0")}, ""},
	}
	for _, tt := range tests {
		var c, s netip.Prefix
		if tt.name != "v4 and v6 never overlap" {
			c, s = cluster, service
		}
		err := ValidatePools(tt.pools, c, s)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%s: ValidatePools = %q, want %q", tt.name, got, tt.want)
		}
	}
}
