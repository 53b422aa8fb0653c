package wg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "wg.key")

	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1 == (wgtypes.Key{}) {
		t.Fatal("generated key is zero")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %o, want 600", got)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != k1.String() {
		t.Errorf("file holds %q, want base64 key %q", b, k1.String())
	}

	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k2 != k1 {
		t.Error("second load returned a different key")
	}

	// a key written by `wg genkey` with loose permissions is accepted and tightened
	other, _ := wgtypes.GeneratePrivateKey()
	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, []byte(other.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k3, err := LoadOrCreateKey(loose)
	if err != nil {
		t.Fatal(err)
	}
	if k3 != other {
		t.Error("loaded key differs from file")
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o600 {
		t.Errorf("loose key mode = %o, want 600", fi.Mode().Perm())
	}

	// garbage is an error, never silently replaced
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Error("garbage key file: no error")
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a key" {
		t.Error("garbage key file was overwritten")
	}
}
