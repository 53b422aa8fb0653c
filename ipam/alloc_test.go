package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func openAlloc(t *testing.T, path, subnet string) *Allocator {
	t.Helper()
	var p netip.Prefix
	if subnet != "" {
		p = pfx(subnet)
	}
	a, err := OpenAllocator(path, p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func allocate(t *testing.T, a *Allocator, id string) string {
	t.Helper()
	p, err := a.Allocate(id, "default/"+id)
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	return p.String()
}

var cmpAlloc = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestAllocatorSequence(t *testing.T) {
	// Each step: allocate (id) or release (-id); want is the address
	// handed out or released.
	tests := []struct {
		name   string
		subnet string
		steps  []string
		want   []string
	}{
		{
			name:   "skips network and gateway, continues after last",
			subnet: "10.244.3.0/24",
			steps:  []string{"a", "b", "c"},
			want:   []string{"10.244.3.2/24", "10.244.3.3/24", "10.244.3.4/24"},
		},
		{
			name:   "idempotent",
			subnet: "10.244.3.0/24",
			steps:  []string{"a", "a", "b", "a"},
			want:   []string{"10.244.3.2/24", "10.244.3.2/24", "10.244.3.3/24", "10.244.3.2/24"},
		},
		{
			name:   "released address not reused at once",
			subnet: "10.244.3.0/24",
			steps:  []string{"a", "b", "-a", "c", "d"},
			want:   []string{"10.244.3.2/24", "10.244.3.3/24", "10.244.3.2", "10.244.3.4/24", "10.244.3.5/24"},
		},
		{
			name:   "wraps before the broadcast address",
			subnet: "10.244.3.0/29", // .2 .. .6 usable
			steps:  []string{"a", "b", "c", "d", "e", "-b", "f"},
			want:   []string{"10.244.3.2/29", "10.244.3.3/29", "10.244.3.4/29", "10.244.3.5/29", "10.244.3.6/29", "10.244.3.3", "10.244.3.3/29"},
		},
		{
			name:   "wrap skips addresses in use",
			subnet: "10.244.3.0/29",
			steps:  []string{"a", "b", "c", "d", "e", "-d", "-e", "f", "g"},
			want:   []string{"10.244.3.2/29", "10.244.3.3/29", "10.244.3.4/29", "10.244.3.5/29", "10.244.3.6/29", "10.244.3.5", "10.244.3.6", "10.244.3.5/29", "10.244.3.6/29"},
		},
		{
			name:   "smallest subnet",
			subnet: "10.244.3.4/30",
			steps:  []string{"a", "-a", "b"},
			want:   []string{"10.244.3.6/30", "10.244.3.6", "10.244.3.6/30"},
		},
		{
			name:   "ipv6",
			subnet: "fd00:0:0:7::/64",
			steps:  []string{"a", "b"},
			want:   []string{"fd00:0:0:7::2/64", "fd00:0:0:7::3/64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := openAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), tt.subnet)
			var got []string
			for _, s := range tt.steps {
				if id, ok := strings.CutPrefix(s, "-"); ok {
					ip, found, err := a.Release(id)
					if err != nil || !found {
						t.Fatalf("release %s: %v %v", id, found, err)
					}
					got = append(got, ip.String())
					continue
				}
				got = append(got, allocate(t, a, s))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAllocatorExhausted(t *testing.T) {
	a := openAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "10.244.3.0/29")
	got := map[string]bool{}
	for i := range 5 {
		got[allocate(t, a, fmt.Sprint(i))] = true
	}
	_, err := a.Allocate("x", "default/x")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	if want := "allocate: node subnet 10.244.3.0/29 has no free pod address left; delete unused pods or give nodes larger subnets"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	for _, never := range []string{"10.244.3.0/29", "10.244.3.1/29", "10.244.3.7/29"} {
		if got[never] {
			t.Errorf("handed out %s", never)
		}
	}
	// An existing id still gets its address when full.
	if p, err := a.Allocate("3", ""); err != nil || p != pfx("10.244.3.5/29") {
		t.Errorf("existing id when full: %s, %v", p, err)
	}
	if _, ok := a.Lookup("x"); ok {
		t.Error("failed allocation recorded")
	}
}

func TestAllocatorRelease(t *testing.T) {
	a := openAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "10.244.3.0/24")
	allocate(t, a, "c1/eth0")
	for i, want := range []bool{true, false} {
		ip, found, err := a.Release("c1/eth0")
		if err != nil || found != want {
			t.Fatalf("release #%d: %s %v %v", i, ip, found, err)
		}
	}
	if ip, found, err := a.Release("never"); err != nil || found || ip.IsValid() {
		t.Errorf("release unknown: %s %v %v", ip, found, err)
	}
	if _, ok := a.Lookup("c1/eth0"); ok {
		t.Error("released id still found")
	}
}

func TestAllocatorReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "ipam.json")
	a := openAlloc(t, path, "10.244.3.0/24")
	for _, id := range []string{"a", "b", "c"} {
		allocate(t, a, id)
	}
	if _, _, err := a.Release("b"); err != nil {
		t.Fatal(err)
	}
	before := a.Allocations()

	// The file is private and complete; no temporary file is left.
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("dir: %v %v", st.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("files in dir: %v", entries)
	}

	for _, subnet := range []string{"10.244.3.0/24", ""} { // "" keeps the stored subnet
		t.Run("subnet="+subnet, func(t *testing.T) {
			b := openAlloc(t, path, subnet)
			if got := b.Subnet(); got != pfx("10.244.3.0/24") {
				t.Errorf("subnet %s", got)
			}
			if diff := cmp.Diff(before, b.Allocations(), cmpAlloc); diff != "" {
				t.Errorf("allocations after reopen (-before +after):\n%s", diff)
			}
			if p, ok := b.Lookup("c"); !ok || p != pfx("10.244.3.4/24") {
				t.Errorf("lookup c = %s %v", p, ok)
			}
		})
	}
	// Round robin goes on after a restart: neither a held address nor the
	// just-released one is handed out.
	b := openAlloc(t, path, "10.244.3.0/24")
	if got := allocate(t, b, "d"); got != "10.244.3.5/24" {
		t.Errorf("after reopen got %s, want 10.244.3.5/24", got)
	}
	if got := allocate(t, b, "a"); got != "10.244.3.2/24" {
		t.Errorf("idempotent after reopen: %s", got)
	}
}

func TestAllocatorSetSubnet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a := openAlloc(t, path, "10.244.3.0/24")
	allocate(t, a, "old1")
	allocate(t, a, "old2")

	if err := a.SetSubnet(pfx("10.244.9.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := allocate(t, a, "new1"); got != "10.244.9.2/24" {
		t.Errorf("new allocation %s", got)
	}
	want := map[string]Allocation{
		"old1": {IP: pfx("10.244.3.2/24"), Owner: "default/old1"},
		"old2": {IP: pfx("10.244.3.3/24"), Owner: "default/old2"},
	}
	if diff := cmp.Diff(want, a.Stale(), cmpAlloc); diff != "" {
		t.Errorf("stale (-want +got):\n%s", diff)
	}
	if len(a.Allocations()) != 3 {
		t.Errorf("allocations %v", a.Allocations())
	}
	// A stale id asking again (a retried ADD) gets an address in the new subnet.
	if got := allocate(t, a, "old1"); got != "10.244.9.3/24" {
		t.Errorf("stale id re-allocated %s", got)
	}
	if ip, ok, err := a.Release("old2"); err != nil || !ok || ip != addr("10.244.3.3") {
		t.Errorf("release stale: %s %v %v", ip, ok, err)
	}
	if len(a.Stale()) != 0 {
		t.Errorf("stale left: %v", a.Stale())
	}

	// Opening with another subnet is a SetSubnet; a grown subnet that
	// holds the old addresses treats their old prefix length as stale.
	b := openAlloc(t, path, "10.244.8.0/23")
	if got := b.Subnet(); got != pfx("10.244.8.0/23") {
		t.Errorf("subnet %s", got)
	}
	if diff := cmp.Diff([]string{"new1", "old1"}, sortedKeys(b.Stale())); diff != "" {
		t.Errorf("stale after growing (-want +got):\n%s", diff)
	}
	// The addresses of stale allocations are not handed out twice.
	got := allocate(t, b, "x")
	if got == "10.244.9.2/23" || got == "10.244.9.3/23" {
		t.Errorf("handed out an address in use: %s", got)
	}

	for _, bad := range []string{"10.244.3.0/31", "10.244.3.0/32", "fd00::/127"} {
		if err := a.SetSubnet(pfx(bad)); err == nil {
			t.Errorf("SetSubnet(%s) accepted", bad)
		}
	}
	if err := a.SetSubnet(netip.Prefix{}); err == nil {
		t.Error("SetSubnet(zero) accepted")
	}
}

func sortedKeys(m map[string]Allocation) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestAllocatorNoSubnet(t *testing.T) {
	a := openAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "")
	if _, err := a.Allocate("a", ""); !errors.Is(err, ErrNoSubnet) {
		t.Errorf("err = %v, want ErrNoSubnet", err)
	}
	if _, err := a.Allocate("", ""); err == nil {
		t.Error("empty id accepted")
	}
}

func TestAllocatorCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage": "{not json",
		"version": `{"version": 99, "allocations": {}}`,
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenAllocator(path, pfx("10.244.3.0/24"))
		if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line naming %s", name, err, path)
		}
	}
}

func TestAllocatorFileFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a := openAlloc(t, path, "10.244.3.0/24")
	allocate(t, a, "c1/eth0")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"version":     float64(1),
		"subnet":      "10.244.3.0/24",
		"last":        "10.244.3.2",
		"allocations": map[string]any{"c1/eth0": map[string]any{"ip": "10.244.3.2/24", "owner": "default/c1/eth0"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
}

// A failed write leaves the allocator as it was.
func TestAllocatorWriteFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	path := filepath.Join(dir, "ipam.json")
	a := openAlloc(t, path, "10.244.3.0/24")
	allocate(t, a, "a")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // a file where the directory was
		t.Fatal(err)
	}
	if _, err := a.Allocate("b", ""); err == nil {
		t.Fatal("allocate succeeded without a place to write")
	}
	if _, ok := a.Lookup("b"); ok {
		t.Error("failed allocation kept")
	}
	if _, _, err := a.Release("a"); err == nil {
		t.Fatal("release succeeded without a place to write")
	}
	if _, ok := a.Lookup("a"); !ok {
		t.Error("failed release dropped the allocation")
	}
	if err := a.SetSubnet(pfx("10.244.4.0/24")); err == nil || a.Subnet() != pfx("10.244.3.0/24") {
		t.Errorf("failed SetSubnet: %v, subnet %s", err, a.Subnet())
	}
	// Once the directory is back, the next allocation continues after "a".
	os.Remove(dir)
	if got := allocate(t, a, "b"); got != "10.244.3.3/24" {
		t.Errorf("after recovery got %s", got)
	}
}

func TestAllocatorConcurrent(t *testing.T) {
	a := openAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "10.244.3.0/24")
	var wg sync.WaitGroup
	results := make([]netip.Prefix, 40)
	for i := range results {
		wg.Go(func() {
			p, err := a.Allocate(fmt.Sprint(i), "")
			if err != nil {
				t.Error(err)
			}
			results[i] = p
		})
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for _, p := range results {
		if seen[p] {
			t.Errorf("%s handed out twice", p)
		}
		seen[p] = true
	}
}
