package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/mesh/objects"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	celschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel/model"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource/tableconvertor"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

// The API server accepts the CRD: structural schema, defaults, printer
// columns, CEL rules compiled and within the cost limits.
func TestCRDValid(t *testing.T) {
	if errs := validateCRD(t, AddressPoolCRD()); len(errs) > 0 {
		t.Fatalf("the API server would refuse the CRD:\n%v", errs.ToAggregate())
	}
}

// The CEL rules use the Kubernetes IP and CIDR libraries, which a CRD may
// use from compatibility version 1.30 (Kubernetes 1.31, whose API server
// compiles new rules at version 1.30) on, and nothing newer.
func TestCELNeedsOnly130(t *testing.T) {
	rules := addressEntryRules()
	s := &structuralschema.Structural{
		Generic:              structuralschema.Generic{Type: "string"},
		ValueValidation:      &structuralschema.ValueValidation{MaxLength: ptr(int64(MaxAddressEntryLen))},
		ValidationExtensions: structuralschema.ValidationExtensions{XValidations: rules},
	}
	compile := func(v *version.Version) []celschema.CompilationResult {
		res, err := celschema.Compile(s, model.SchemaDeclType(s, false), celconfig.PerCallLimit,
			environment.MustBaseEnvSet(v), celschema.NewExpressionsEnvLoader())
		if err != nil {
			t.Fatalf("compile at %v: %v", v, err)
		}
		return res
	}
	for i, r := range compile(version.MajorMinor(1, 30)) {
		if r.Error != nil {
			t.Errorf("rule %d does not compile at 1.30: %v", i, r.Error)
		}
		// The per-expression limit, for a full list.
		if cost := r.MaxCost * MaxAddresses; cost > 10_000_000 {
			t.Errorf("rule %d: estimated cost %d per entry, %d for %d entries", i, r.MaxCost, cost, MaxAddresses)
		}
	}
	failed := 0
	for _, r := range compile(version.MajorMinor(1, 29)) {
		if r.Error != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Error("every rule compiles at 1.29, which has no IP or CIDR library: the test is not testing what it says")
	}
}

func ptr[T any](v T) *T { return &v }

// pool is an AddressPool named lan with the given entries (JSON strings
// are YAML too).
func pool(addrs ...string) string {
	b, _ := json.Marshal(addrs)
	return "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: " + string(b) + "\n"
}

func poolSpec(spec string) string {
	return "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n" + spec
}

func named(name, doc string) string {
	return strings.Replace(doc, "name: lan", "name: "+name, 1)
}

// addrs returns n distinct IPv4 addresses.
func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
	}
	return out
}

// TestAddressPoolSchema puts AddressPools through the API server's create
// path with the CRD (server: "" accepted, else a piece of the error) and
// through mesh/objects.Parse, netloom's own validation (agent: accepted).
// Rows where the two differ are the CRD's known limits.
func TestAddressPoolSchema(t *testing.T) {
	const syntax = "must be a CIDR (192.168.1.240/28), a range (192.168.1.240-192.168.1.250) or one address"
	tests := []struct {
		name   string
		doc    string
		server string
		agent  bool
	}{
		// Examples from the repository (README.md's are in TestReadmeExamples).
		{"mesh/objects: CIDR, range, address, IPv6, autoAssign false",
			poolSpec("  addresses:\n  - 192.168.1.240/29\n  - 192.168.1.250 - 192.168.1.252\n  - 192.168.1.254\n  - '2001:db8::/120'\n  autoAssign: false\n"), "", true},
		{"mesh/objects: a CIDR and an address", pool("192.168.1.240/28", "192.168.2.7"), "", true},
		{"mesh/objects: an IPv6 range", named("v6", pool("2001:db8::10-2001:db8::1f")), "", true},
		{"mesh/objects: IPv4 and IPv6", pool("192.168.1.240/28", "192.168.2.10-192.168.2.20"), "", true},
		{"node fuzz seed", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [192.168.1.240/28]\n", "", true},
		// Inside the default cluster CIDR: only the agent's apply-time
		// check (lb.ValidateApply) knows the cluster CIDR.
		{"node fuzz seed: pool in the cluster CIDR", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: pods\nspec:\n  addresses: [10.244.0.0/24]\n", "", true},
		{"bench/failover", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [10.77.0.200-10.77.0.210]\n", "", true},
		{"integration poolManifest", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: extra\nspec:\n  autoAssign: false\n  addresses: [10.77.0.220, 10.77.0.221-10.77.0.222]\n", "", true},
		{"integration webuiManifest", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [10.77.0.240, 10.77.0.241]\n", "", true},
		{"unknown fields and status are dropped", poolSpec("  addresses: [10.77.0.0/24]\n  extra: 1\nstatus:\n  used: 3\n"), "", true},

		// Accepted by both.
		{"range of one address", pool("10.0.0.5-10.0.0.5"), "", true},
		{"range over all of IPv4", pool("0.0.0.0-255.255.255.255"), "", true},
		{"range decided in the first octet", pool("9.255.255.255-10.0.0.0"), "", true},
		{"spaces around an entry", pool(" 10.0.0.1 "), "", true},
		{"IPv6 address", pool("2001:db8::1"), "", true},
		{fmt.Sprint(MaxAddresses, " entries"), pool(addrs(MaxAddresses)...), "", true},

		// Refused by both.
		{"no spec", "apiVersion: netloom.io/v1alpha1\nkind: AddressPool\nmetadata:\n  name: lan\n", "spec: Required value", false},
		{"no addresses", poolSpec("  autoAssign: false\n"), "spec.addresses: Required value", false},
		{"empty addresses", poolSpec("  addresses: []\n"), "spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items", false},
		{"empty entry", pool("10.77.0.0/24", ""), `spec.addresses[1]: Invalid value: "": spec.addresses[1] in body should be at least 1 chars long`, false},
		{"blank entry", pool("  "), `spec.addresses[0]: Invalid value: "  ": ` + syntax, false},
		{"prefix too long", pool("10.77.0.0/33"), syntax, false},
		{"CIDR with host bits", pool("192.168.1.241/28"), `spec.addresses[0]: Invalid value: "192.168.1.241/28": CIDR has host bits set`, false},
		{"IPv6 CIDR with host bits", pool("2001:db8::1/64"), "CIDR has host bits set", false},
		{"half a range", pool("192.168.1.240-192.168.1"), syntax, false},
		{"range that starts after it ends", pool("192.168.1.250-192.168.1.240"), `spec.addresses[0]: Invalid value: "192.168.1.250-192.168.1.240": range starts after it ends`, false},
		{"range backwards across octets", pool("10.0.1.0-10.0.0.255"), "range starts after it ends", false},
		{"range backwards by one", pool("255.255.255.255-255.255.255.254"), "range starts after it ends", false},
		{"range mixing families", pool("192.168.1.240-2001:db8::1"), "range mixes IPv4 and IPv6", false},
		{"three ends", pool("10.0.0.1-10.0.0.2-10.0.0.3"), syntax, false},
		{"CIDR and range", pool("10.0.0.0/24-10.0.1.0"), syntax, false},
		{"not an address", pool("lan"), syntax, false},
		{"address with a zone", pool("fe80::1%eth0"), syntax, false},
		{"leading zeros", pool("10.0.0.01"), syntax, false},
		{"the same entry twice", pool("10.0.0.1", "10.0.0.1"), `spec.addresses[1]: Duplicate value: "10.0.0.1"`, false},
		{"addresses of the wrong type", poolSpec("  addresses: 10.77.0.0/24\n"), "spec.addresses: Invalid value: \"string\": spec.addresses in body must be of type array", false},
		{"address of the wrong type", poolSpec("  addresses: [10]\n"), "spec.addresses[0]: Invalid value: \"integer\": spec.addresses[0] in body must be of type string", false},
		{"autoAssign of the wrong type", poolSpec("  addresses: [10.77.0.0/24]\n  autoAssign: 'no'\n"), "spec.autoAssign: Invalid value: \"string\": spec.autoAssign in body must be of type boolean", false},
		{"name with dots", named("lan.a", pool("10.77.0.0/24")), `metadata.name: Invalid value: "lan.a": metadata.name in body should match`, false},
		{"name with capitals", named("Lan_1", pool("10.77.0.0/24")), `metadata.name: Invalid value: "Lan_1"`, false},
		{"name of 64 characters", named(strings.Repeat("a", 64), pool("10.77.0.0/24")), "metadata.name: Too long: may not be more than 63 bytes", false},

		// Where the CRD and the agent differ.
		// The Kubernetes IP functions refuse IPv4-mapped IPv6 addresses;
		// lb.ParseRange takes them as IPv4.
		{"IPv4-mapped IPv6 address", pool("::ffff:10.0.0.1"), syntax, true},
		{"IPv4-mapped IPv6 CIDR", pool("::ffff:10.0.0.0/120"), syntax, true},
		// CEL cannot order IPv6 addresses within the cost limits.
		{"IPv6 range that starts after it ends", pool("2001:db8::1f-2001:db8::10"), "", false},
		// Overlaps are the agent's (CEL cannot compare ranges pairwise
		// within the cost limits); only identical strings are refused.
		{"entries that overlap", pool("192.168.1.240/28", "192.168.1.250-192.168.1.252"), "", false},
		{"the same address spelled twice", pool("2001:db8::1", "2001:DB8::1"), "", false},
		// Limits the CEL cost estimate needs.
		{fmt.Sprint(MaxAddresses+1, " entries"), pool(addrs(MaxAddresses + 1)...), fmt.Sprintf("spec.addresses: Too many: %d: must have at most %d items", MaxAddresses+1, MaxAddresses), true},
		{"entry longer than the limit", pool("10.0.0.1" + strings.Repeat(" ", MaxAddressEntryLen)), fmt.Sprintf("spec.addresses[0]: Too long: may not be more than %d bytes", MaxAddressEntryLen), true},
	}
	s := newPoolServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, err := s.create(tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.server == "" && len(errs) > 0:
				t.Errorf("API server refuses it: %v", errs.ToAggregate())
			case tt.server != "" && len(errs) == 0:
				t.Errorf("API server accepts it, want error %q", tt.server)
			case tt.server != "" && !strings.Contains(errs.ToAggregate().Error(), tt.server):
				t.Errorf("API server error:\n  %v\nwant it to contain\n  %s", errs.ToAggregate(), tt.server)
			}
			_, perr := objects.Parse([]byte(tt.doc))
			if got := perr == nil; got != tt.agent {
				t.Errorf("mesh/objects.Parse accepted=%v (%v), want %v", got, perr, tt.agent)
			}
		})
	}
}

// What the API server stores: autoAssign defaulted to true (as
// mesh/objects does), unknown fields pruned.
func TestAddressPoolStored(t *testing.T) {
	s := newPoolServer(t)
	u, errs, err := s.create(poolSpec("  addresses: [10.77.0.0/24]\n  extra: 1\nstatus:\n  used: 3\n"))
	if err != nil || len(errs) > 0 {
		t.Fatalf("create: %v %v", err, errs.ToAggregate())
	}
	want := map[string]any{
		"apiVersion": "netloom.io/v1alpha1",
		"kind":       "AddressPool",
		"metadata":   map[string]any{"name": "lan"},
		"spec":       map[string]any{"addresses": []any{"10.77.0.0/24"}, "autoAssign": true},
	}
	if diff := cmp.Diff(want, u.Object); diff != "" {
		t.Errorf("stored object (-want +got):\n%s", diff)
	}
	// The stored object decodes into netloom's Go type.
	j, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var p objects.AddressPool
	if err := json.Unmarshal(j, &p); err != nil {
		t.Fatalf("decode into objects.AddressPool: %v", err)
	}
	if _, err := p.LBPool(); err != nil || p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Errorf("objects.AddressPool %+v: LBPool error %v", p.Spec, err)
	}
}

// Every AddressPool in README.md's YAML blocks passes both.
func TestReadmeExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := newPoolServer(t)
	found := 0
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	for _, b := range blocks {
		for _, doc := range splitDocs([]byte(b[1])) {
			if !regexp.MustCompile(`(?m)^kind: AddressPool\s*(#.*)?$`).MatchString(doc) {
				continue
			}
			found++
			if _, errs, err := s.create(doc); err != nil || len(errs) > 0 {
				t.Errorf("API server refuses README example (%v %v):\n%s", err, errs.ToAggregate(), doc)
			}
			if _, err := objects.Parse([]byte(doc)); err != nil {
				t.Errorf("mesh/objects refuses README example (%v):\n%s", err, doc)
			}
		}
	}
	if found == 0 {
		t.Fatal("README.md has no AddressPool example in a yaml block")
	}
}

// `kubectl get pools` shows the addresses and autoAssign.
func TestPrinterColumns(t *testing.T) {
	conv, err := tableconvertor.New(AddressPoolCRD().Spec.Versions[0].AdditionalPrinterColumns)
	if err != nil {
		t.Fatal(err)
	}
	s := newPoolServer(t)
	u, errs, err := s.create(pool("192.168.1.240/28", "192.168.2.10-192.168.2.20"))
	if err != nil || len(errs) > 0 {
		t.Fatalf("create: %v %v", err, errs.ToAggregate())
	}
	table, err := conv.ConvertToTable(context.Background(), u, &metav1.TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, c := range table.ColumnDefinitions {
		header = append(header, c.Name)
	}
	if diff := cmp.Diff([]string{"Name", "Addresses", "Auto-Assign", "Age"}, header); diff != "" {
		t.Errorf("columns (-want +got):\n%s", diff)
	}
	want := []any{"lan", `["192.168.1.240/28","192.168.2.10-192.168.2.20"]`, true, nil} // no creationTimestamp here
	if diff := cmp.Diff(want, table.Rows[0].Cells); diff != "" {
		t.Errorf("row (-want +got):\n%s", diff)
	}
}
