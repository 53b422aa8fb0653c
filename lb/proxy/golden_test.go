package proxy

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); run go test -update if the change is intended:\n%s", path, diff)
	}
}

// One golden file per representative service (compiled alone), and one of
// all of them together. Model.String sorts sets, chains and elements, so
// the files are stable.
func TestGolden(t *testing.T) {
	all := fixtures()
	for _, f := range all {
		t.Run(f.name, func(t *testing.T) {
			m := Compile(inputOf(f))
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			checkGolden(t, f.name+".golden", m.String())
		})
	}
	t.Run("all", func(t *testing.T) {
		m := Compile(inputOf(all...))
		if err := m.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		checkGolden(t, "all.golden", m.String())
	})
}
