package webui

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// cookieName is the session cookie of a logged-in browser.
const cookieName = "netloom_session"

// sessionTTL is how long a login lasts.
const sessionTTL = 24 * time.Hour

// authenticator checks the cluster token. The session cookie is
// "v1.<expiry unix seconds>.<HMAC-SHA256(token, expiry)>": it proves the
// browser knew the token without holding it, and expires.
type authenticator struct {
	tokenSum [sha256.Size]byte
	key      []byte
	now      func() time.Time
}

func newAuthenticator(token string, now func() time.Time) *authenticator {
	// The MAC key is derived from the token, so a cookie never reveals it.
	k := hmac.New(sha256.New, []byte(token))
	k.Write([]byte("netloom web UI session key v1"))
	return &authenticator{tokenSum: sha256.Sum256([]byte(token)), key: k.Sum(nil), now: now}
}

// validToken compares in constant time (over digests, so the length of the
// token leaks nothing either).
func (a *authenticator) validToken(tok string) bool {
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

func (a *authenticator) mac(expiry string) string {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte("session|" + expiry))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (a *authenticator) sessionCookie() *http.Cookie {
	exp := a.now().Add(sessionTTL)
	e := strconv.FormatInt(exp.Unix(), 10)
	return &http.Cookie{
		Name:     cookieName,
		Value:    "v1." + e + "." + a.mac(e),
		Path:     "/",
		MaxAge:   int(sessionTTL / time.Second),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	}
}

func (a *authenticator) validSession(v string) bool {
	ver, rest, ok := strings.Cut(v, ".")
	if !ok || ver != "v1" {
		return false
	}
	e, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || a.now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(a.mac(e)))
}

// check accepts a request with a valid session cookie or bearer token.
func (a *authenticator) check(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && a.validToken(tok) {
			return true
		}
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return a.validSession(c.Value)
	}
	return false
}
