package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/netloom/netloom/lb"
)

// pool builds an AddressPool document named lan with the given spec
// (indented two spaces).
func pool(spec string) string {
	return "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n" + spec
}

func TestParseAddressPool(t *testing.T) {
	const meta = `{"apiVersion":"netloom.io/v1alpha1","kind":"AddressPool","metadata":{"name":"lan"},"spec":`
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{
			name: "autoAssign defaults to true",
			in:   pool("  addresses:\n  - 192.168.1.240/28\n"),
			want: []got{{"AddressPool", "", "lan", meta + `{"addresses":["192.168.1.240/28"],"autoAssign":true}}`}},
		},
		{
			name: "CIDRs, ranges, single addresses, IPv6; autoAssign false kept; entries as written",
			in:   pool("  addresses:\n  - 192.168.1.240/29\n  - 192.168.1.250 - 192.168.1.252\n  - 192.168.1.254\n  - '2001:db8::/120'\n  autoAssign: false\n"),
			want: []got{{"AddressPool", "", "lan", meta +
				`{"addresses":["192.168.1.240/29","192.168.1.250 - 192.168.1.252","192.168.1.254","2001:db8::/120"],"autoAssign":false}}`}},
		},
		{
			name: "cluster scoped: namespace dropped; labels and annotations kept; status dropped",
			in: "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\n  namespace: ignored\n  labels:\n    site: a\n" +
				"  annotations:\n    note: rack 4\nspec:\n  addresses: [10.77.0.0/24]\nstatus:\n  used: 3\n",
			want: []got{{"AddressPool", "", "lan",
				`{"apiVersion":"netloom.io/v1alpha1","kind":"AddressPool","metadata":{"name":"lan","labels":{"site":"a"},"annotations":{"note":"rack 4"}},` +
					`"spec":{"addresses":["10.77.0.0/24"],"autoAssign":true}}`}},
		},
		{
			name: "AddressPoolList whose items have no kind or apiVersion, JSON",
			in:   `{"apiVersion":"netloom.io/v1alpha1","kind":"AddressPoolList","items":[{"metadata":{"name":"lan"},"spec":{"addresses":["10.77.0.1"],"autoAssign":true}}]}`,
			want: []got{{"AddressPool", "", "lan", meta + `{"addresses":["10.77.0.1"],"autoAssign":true}}`}},
		},
		{
			name: "a pool and a service in one file; the same name is no conflict",
			in:   pool("  addresses: [10.77.0.0/24]\n") + "---\n" + strings.Replace(svcDoc("  type: LoadBalancer\n"+port80), "name: web", "name: lan", 1),
			want: []got{
				{"AddressPool", "", "lan", meta + `{"addresses":["10.77.0.0/24"],"autoAssign":true}}`},
				{"Service", "x", "lan", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"lan","namespace":"x"},"spec":` +
					`{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"type":"LoadBalancer","sessionAffinity":"None","externalTrafficPolicy":"Cluster"}}`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, summarize(objs)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			for _, o := range objs {
				again, err := FromJSON([]json.RawMessage{o.JSON})
				if err != nil {
					t.Fatalf("FromJSON(normalized): %v", err)
				}
				if diff := cmp.Diff(string(o.JSON), string(again[0].JSON)); diff != "" {
					t.Errorf("normalized form not stable (-first +second):\n%s", diff)
				}
			}
		})
	}
}

func TestParseAddressPoolErrors(t *testing.T) {
	const doc = "document 1 (AddressPool lan): "
	addrs := func(a ...string) string { return pool("  addresses: ['" + strings.Join(a, "', '") + "']\n") }
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"no addresses", pool("  autoAssign: false\n"),
			doc + `spec.addresses: no addresses; give at least one CIDR or range`},
		{"empty addresses", pool("  addresses: []\n"),
			doc + `spec.addresses: no addresses; give at least one CIDR or range`},
		{"no spec", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\n",
			doc + `spec.addresses: no addresses; give at least one CIDR or range`},
		{"empty entry", addrs("10.77.0.0/24", ""),
			doc + `spec.addresses[1]: empty address; want a CIDR (192.168.1.240/28) or a range (192.168.1.240-192.168.1.250)`},
		{"bad CIDR", addrs("10.77.0.0/33"),
			doc + `spec.addresses[0]: "10.77.0.0/33" is not a CIDR; want e.g. 192.168.1.240/28`},
		{"CIDR with host bits", addrs("192.168.1.241/28"),
			doc + `spec.addresses[0]: 192.168.1.241/28 has host bits set; did you mean 192.168.1.240/28?`},
		{"bad range", addrs("192.168.1.240-192.168.1"),
			doc + `spec.addresses[0]: "192.168.1.240-192.168.1" is not a range of addresses; want e.g. 192.168.1.240-192.168.1.250`},
		{"range that starts after it ends", addrs("192.168.1.250-192.168.1.240"),
			doc + `spec.addresses[0]: range 192.168.1.250-192.168.1.240 starts after it ends`},
		{"range mixing families", addrs("192.168.1.240-2001:db8::1"),
			doc + `spec.addresses[0]: range 192.168.1.240-2001:db8::1 mixes IPv4 and IPv6`},
		{"not an address", addrs("lan"),
			doc + `spec.addresses[0]: "lan" is not a CIDR or a range; want e.g. 192.168.1.240/28 or 192.168.1.240-192.168.1.250`},
		{"entries that overlap", addrs("192.168.1.240/28", "192.168.1.250-192.168.1.252"),
			doc + `spec.addresses[1]: 192.168.1.250-192.168.1.252 overlaps spec.addresses[0] (192.168.1.241-192.168.1.254)`},
		{"addresses of the wrong type", pool("  addresses: 10.77.0.0/24\n"),
			doc + `spec.addresses: expected list, got string`},
		{"address of the wrong type", pool("  addresses: [10]\n"),
			doc + `spec.addresses[0]: expected string, got number (quote the value)`},
		{"autoAssign of the wrong type", pool("  addresses: [10.77.0.0/24]\n  autoAssign: 'no'\n"),
			doc + `spec.autoAssign: expected boolean, got string`},
		{"bad name", strings.Replace(addrs("10.77.0.0/24"), "name: lan", "name: Lan_1", 1),
			`document 1 (AddressPool Lan_1): metadata.name: invalid name "Lan_1": ` + msgLabel},
		{"name with dots", strings.Replace(addrs("10.77.0.0/24"), "name: lan", "name: lan.a", 1),
			`document 1 (AddressPool lan.a): metadata.name: invalid name "lan.a": must not contain dots`},
		{"core apiVersion", strings.Replace(addrs("10.77.0.0/24"), "netloom.io/v1alpha1", "v1", 1),
			doc + `apiVersion: "v1" is not supported for kind AddressPool (use netloom.io/v1alpha1)`},
		{"MetalLB's apiVersion", strings.Replace(addrs("10.77.0.0/24"), "netloom.io/v1alpha1", "metallb.io/v1beta1", 1),
			doc + `apiVersion: "metallb.io/v1beta1" is not supported for kind AddressPool (use netloom.io/v1alpha1)`},
		{"missing apiVersion", strings.Replace(addrs("10.77.0.0/24"), "apiVersion: netloom.io/v1alpha1\n", "", 1),
			doc + `apiVersion: required (use netloom.io/v1alpha1)`},
		{"duplicate pool, namespace does not count", addrs("10.77.0.0/24") + "---\n" + strings.Replace(addrs("10.78.0.0/24"), "name: lan\n", "name: lan\n  namespace: x\n", 1),
			`document 2 (AddressPool lan): duplicate of document 1 (same kind, namespace and name)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %v, want error %q", summarize(objs), tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Errorf("error is %T, want *DocumentError", err)
			}
		})
	}
}

// The errors of lb.ParsePool stay reachable through the DocumentError.
func TestAddressPoolFieldError(t *testing.T) {
	_, err := Parse([]byte(pool("  addresses: [10.77.0.0/24, 10.77.0.9]\n")))
	var fe *lb.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Parse error = %v (%T), want one that wraps *lb.FieldError", err, err)
	}
	if diff := cmp.Diff("spec.addresses[1]", fe.Field); diff != "" {
		t.Errorf("FieldError.Field (-want +got):\n%s", diff)
	}
	if err := fieldError(errors.New("plain")); err.Error() != "plain" {
		t.Errorf("fieldError(plain) = %v", err)
	}
}

func TestAddressPoolKind(t *testing.T) {
	for _, in := range []string{"addresspools", "addresspool", "AddressPool", "pool", "pools", "POOLS"} {
		k, err := NormalizeKind(in)
		if err != nil || k != "AddressPool" {
			t.Errorf("NormalizeKind(%q) = %q, %v; want AddressPool", in, k, err)
		}
	}
	if k, ok := Lookup("AddressPool"); !ok || k.Namespaced || k.APIVersions[0] != AddressPoolAPIVersion {
		t.Errorf("Lookup(AddressPool) = %+v, %v", k, ok)
	}
}

func TestDecodeAddressPool(t *testing.T) {
	raws := mustParse(t, pool("  addresses:\n  - 192.168.1.240/28\n  - 192.168.2.7\n  autoAssign: false\n")+"---\n"+
		strings.Replace(pool("  addresses: ['2001:db8::10-2001:db8::1f']\n"), "name: lan", "name: v6", 1))
	var gotPools []lb.Pool
	for _, raw := range raws {
		p, err := DecodeAddressPool(raw)
		if err != nil {
			t.Fatalf("DecodeAddressPool: %v", err)
		}
		lp, err := p.LBPool()
		if err != nil {
			t.Fatalf("LBPool: %v", err)
		}
		gotPools = append(gotPools, lp)
	}
	ip := netip.MustParseAddr
	want := []lb.Pool{
		// A /28 leaves out its network and broadcast addresses.
		{Name: "lan", Ranges: []lb.Range{{Start: ip("192.168.1.241"), End: ip("192.168.1.254")}, {Start: ip("192.168.2.7"), End: ip("192.168.2.7")}}, AutoAssign: false},
		{Name: "v6", Ranges: []lb.Range{{Start: ip("2001:db8::10"), End: ip("2001:db8::1f")}}, AutoAssign: true},
	}
	if diff := cmp.Diff(want, gotPools, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("LBPool (-want +got):\n%s", diff)
	}

	if _, err := DecodeAddressPool(json.RawMessage(podWeb)); err == nil || err.Error() != `decode AddressPool: object is of kind "Pod"` {
		t.Errorf("DecodeAddressPool(pod) error = %v", err)
	}
	// A pool that never passed validation: nil autoAssign is true; bad
	// addresses come back as *lb.FieldError naming the pool.
	p := &AddressPool{Spec: AddressPoolSpec{Addresses: []string{"10.0.0.1-10.0.0.0"}}}
	p.Name = "raw"
	_, err := p.LBPool()
	var fe *lb.FieldError
	if !errors.As(err, &fe) || err.Error() != "AddressPool raw: spec.addresses[0]: range 10.0.0.1-10.0.0.0 starts after it ends" {
		t.Errorf("LBPool(bad) error = %v", err)
	}
	p.Spec.Addresses = []string{"10.0.0.1"}
	if lp, err := p.LBPool(); err != nil || !lp.AutoAssign {
		t.Errorf("LBPool(nil autoAssign) = %+v, %v; want AutoAssign true", lp, err)
	}
}

func TestAddressPoolTable(t *testing.T) {
	raws := mustParse(t, pool("  addresses:\n  - 192.168.1.240/28\n  - 192.168.2.10-192.168.2.20\n")+"---\n"+
		strings.Replace(pool("  addresses: ['2001:db8::/120']\n  autoAssign: false\n"), "name: lan", "name: dmz", 1))
	rows, err := Table("AddressPool", raws)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	want := [][]string{
		{"NAME", "ADDRESSES", "AUTO-ASSIGN"},
		{"dmz", "2001:db8::/120", "false"},
		{"lan", "192.168.1.240/28,192.168.2.10-192.168.2.20", "true"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("Table(AddressPool) (-want +got):\n%s", diff)
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	wantText := "" +
		"NAME   ADDRESSES                                    AUTO-ASSIGN\n" +
		"dmz    2001:db8::/120                               false\n" +
		"lan    192.168.1.240/28,192.168.2.10-192.168.2.20   true\n"
	if diff := cmp.Diff(wantText, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
	if _, err := Table("AddressPool", []json.RawMessage{json.RawMessage(podWeb)}); err == nil ||
		err.Error() != `address pool table: decode AddressPool: object is of kind "Pod"` {
		t.Errorf("Table(AddressPool, pod) error = %v", err)
	}
}
