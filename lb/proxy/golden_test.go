package proxy

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/netloom/netloom/nft/nfttest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	nfttest.CheckGolden(t, filepath.Join("testdata", name), got, *update)
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
