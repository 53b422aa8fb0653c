package node

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseToken: a join token (from --token, a token file or the data
// dir) never panics the parser; a refusal is one line and yields no
// secret; an accepted token yields a 32-byte secret whose token parses to
// the same secret, and Token writes it the canonical way.
func FuzzParseToken(f *testing.F) {
	secret := bytes.Repeat([]byte{0xa5}, 32)
	for _, s := range []string{
		Token(secret),
		"  " + Token(secret) + "\n",
		Token(make([]byte, 32)),
		Token(secret)[:40],
		Token(secret) + "AA",
		"nl1." + strings.Repeat("_", 43),
		"nl1." + strings.Repeat("-", 43),
		"",
		"abc",
		"nl1.",
		"nl1.!!!!",
		"nl1.c2hvcnQ",
		"nl2." + strings.Repeat("A", 43),
		"nl1." + strings.Repeat("A", 42) + "=",
		"nl1." + strings.Repeat("A", 20) + "\r\n" + strings.Repeat("A", 23),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := ParseToken(tok)
		if err != nil {
			if s != nil {
				t.Fatalf("ParseToken(%q) returned a secret with its error %v", tok, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("ParseToken(%q) error has more than one line: %q", tok, err)
			}
			return
		}
		if len(s) != 32 {
			t.Fatalf("ParseToken(%q) gave a secret of %d bytes", tok, len(s))
		}
		canon := Token(s)
		again, err := ParseToken(canon)
		if err != nil || !bytes.Equal(again, s) {
			t.Fatalf("ParseToken(%q) = %x, whose token %q parses to %x, %v", tok, s, canon, again, err)
		}
		if Token(again) != canon || !strings.HasPrefix(canon, tokenPrefix) || len(canon) != len(tokenPrefix)+43 {
			t.Fatalf("Token(%x) = %q is not canonical", s, canon)
		}
		if len(GossipKey(s)) != 32 {
			t.Fatalf("GossipKey of an accepted secret is not 32 bytes")
		}
	})
}
