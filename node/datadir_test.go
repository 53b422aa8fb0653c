package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRemoveStaleTemps(t *testing.T) {
	dir := t.TempDir()
	files := map[string]bool{ // name -> removed
		".pods.json123456":      true,
		".peers.json9":          true,
		"." + SecretFile + "42": true,
		".wireguard.key7":       true,
		"pods.json":             false,
		".pods.json":            false, // no number: not ours
		".pods.jsonx1":          false,
		".bashrc1":              false,
		"notes.txt":             false,
	}
	for f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleTemps(dir)
	for f, removed := range files {
		_, err := os.Stat(filepath.Join(dir, f))
		if gone := os.IsNotExist(err); gone != removed {
			t.Errorf("%s: removed %t, want %t", f, gone, removed)
		}
	}
}

func TestWriteFileAtomicLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, PeersFile)
	for _, s := range []string{"[]", `["10.0.0.2:7946"]`} {
		if err := writeFileAtomic(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != s {
			t.Errorf("file holds %q, want %q", b, s)
		}
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{PeersFile}) {
		t.Errorf("directory holds %v, want only %s", names, PeersFile)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestLoadSecretCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SecretFile)
	if err := os.WriteFile(path, []byte("nl1.too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadSecret("", "", dir)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--token") || strings.Contains(err.Error(), "\n") {
		t.Errorf("err = %v, want one line naming %s and --token", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "nl1.too-short\n" {
		t.Errorf("the file changed to %q", b)
	}
}
