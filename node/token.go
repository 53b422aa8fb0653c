package node

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/hkdf"
)

// tokenPrefix marks a netloom join token and its format version.
const tokenPrefix = "nl1."

// SecretFile is the name of the cluster secret inside the data dir.
const SecretFile = "cluster.secret"

// NewSecret returns 32 random bytes.
func NewSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return nil, fmt.Errorf("generate cluster secret: %w", err)
	}
	return b, nil
}

// Token encodes the cluster secret as a join token.
func Token(secret []byte) string {
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
}

// ParseToken decodes a join token into the cluster secret.
func ParseToken(tok string) ([]byte, error) {
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, tokenPrefix) {
		return nil, errors.New("join token is not a netloom token (it starts with \"nl1.\"; copy it again from 'netloom init')")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, tokenPrefix))
	if err != nil || len(b) != 32 {
		return nil, errors.New("join token is damaged (copy it again from 'netloom init')")
	}
	return b, nil
}

// GossipKey derives the 32-byte AES key memberlist uses from the secret.
func GossipKey(secret []byte) []byte {
	r := hkdf.New(sha256.New, secret, nil, []byte("netloom gossip v1"))
	key := make([]byte, 32)
	if _, err := io.ReadFull(r, key); err != nil {
		panic(err) // hkdf cannot fail for 32 bytes
	}
	return key
}

// InitSecret creates the cluster secret in dataDir, or returns the one that is
// already there (created reports which).
func InitSecret(dataDir string) (secret []byte, created bool, err error) {
	path := filepath.Join(dataDir, SecretFile)
	if b, err := os.ReadFile(path); err == nil {
		s, err := ParseToken(string(b))
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", path, err)
		}
		return s, false, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data dir: %w", err)
	}
	s, err := NewSecret()
	if err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(path, []byte(Token(s)+"\n"), 0o600); err != nil {
		return nil, false, fmt.Errorf("store cluster secret: %w", err)
	}
	return s, true, nil
}

// loadSecret picks the secret from, in order, the token, the token file and
// the data dir.
func loadSecret(token, tokenFile, dataDir string) ([]byte, error) {
	switch {
	case token != "":
		return ParseToken(token)
	case tokenFile != "":
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		s, err := ParseToken(string(b))
		if err != nil {
			return nil, fmt.Errorf("token file %s: %w", tokenFile, err)
		}
		return s, nil
	}
	path := filepath.Join(dataDir, SecretFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no cluster token: run 'netloom init --data-dir %s' on the first node, or pass --token / --token-file to join one", dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster secret: %w", err)
	}
	s, err := ParseToken(string(b))
	if err != nil {
		return nil, fmt.Errorf("cluster secret %s is corrupt: remove it and start once with --token set to the cluster's join token (from 'netloom init' on any node), which writes it again", path)
	}
	return s, nil
}
