package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseToken("  " + Token(s) + "\n")
	if err != nil {
		t.Fatalf("ParseToken(Token(s)) error: %v", err)
	}
	if !bytes.Equal(got, s) {
		t.Errorf("ParseToken(Token(s)) = %x, want %x", got, s)
	}
}

func TestParseTokenErrors(t *testing.T) {
	for _, tok := range []string{"", "abc", "nl1.", "nl1.!!!!", "nl1.c2hvcnQ", "nl2." + strings.Repeat("A", 43)} {
		if _, err := ParseToken(tok); err == nil {
			t.Errorf("ParseToken(%q) succeeded, want error", tok)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseToken(%q) error has several lines: %q", tok, err)
		}
	}
}

func TestGossipKeyDiffersPerSecret(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ka, kb := GossipKey(a), GossipKey(b)
	if len(ka) != 32 {
		t.Fatalf("key length %d, want 32", len(ka))
	}
	if bytes.Equal(ka, kb) || bytes.Equal(ka, a) {
		t.Error("gossip keys must differ per secret and from the secret")
	}
	if !bytes.Equal(ka, GossipKey(a)) {
		t.Error("gossip key must be deterministic")
	}
}

func TestInitSecretKeepsExisting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s1, created, err := InitSecret(dir)
	if err != nil || !created {
		t.Fatalf("first InitSecret: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, created, err := InitSecret(dir)
	if err != nil || created {
		t.Fatalf("second InitSecret: created=%v err=%v", created, err)
	}
	if !bytes.Equal(s1, s2) {
		t.Error("second InitSecret changed the secret")
	}
}

func TestLoadSecretOrder(t *testing.T) {
	dir := t.TempDir()
	sDir, _, err := InitSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	sFlag, _ := NewSecret()
	sFile, _ := NewSecret()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(Token(sFile)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, file string
		want              []byte
	}{
		{"flag wins", Token(sFlag), file, sFlag},
		{"file next", "", file, sFile},
		{"data dir last", "", "", sDir},
	}
	for _, tt := range tests {
		got, err := loadSecret(tt.token, tt.file, dir)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got another secret", tt.name)
		}
	}
	if _, err := loadSecret("", "", t.TempDir()); err == nil || !strings.Contains(err.Error(), "netloom init") {
		t.Errorf("no secret anywhere: err = %v, want a hint to run netloom init", err)
	}
}
