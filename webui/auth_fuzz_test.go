package webui

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

// fuzzToken is the cluster token of the fuzzed dashboard. No seed holds
// it: the fuzzer must not be handed a way in.
const fuzzToken = "nl1.ZnV6emluZyB0aGUgbG9naW4gb2YgdGhlIGRhc2hib2FyZCAh"

// fuzzNow is the fuzzed dashboard's clock.
var fuzzNow = time.Date(2026, 11, 21, 17, 50, 0, 0, time.UTC)

type fuzzSource struct{ log *events.Log }

func (fuzzSource) Status() api.Status               { return api.Status{Node: api.NodeStatus{Name: "n1"}} }
func (fuzzSource) Objects(kind string) []api.Object { return nil }
func (s fuzzSource) Events() *events.Log            { return s.log }

// bearerOK reports whether an Authorization header carries the token,
// the way the dashboard reads it.
func bearerOK(h string) bool {
	scheme, tok, ok := strings.Cut(h, " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) == fuzzToken
}

// FuzzAuth: arbitrary session cookies, Authorization headers and login
// form bodies never panic the dashboard and never authenticate: only the
// token itself does (as a bearer token or posted to /login), and no cookie
// passes that this dashboard did not make (valid and unexpired).
func FuzzAuth(f *testing.F) {
	mine := newAuthenticator(fuzzToken, func() time.Time { return fuzzNow.Add(-sessionTTL - time.Hour) })
	expired := mine.sessionCookie().Value // made a day and an hour ago
	other := newAuthenticator("nl1.another", func() time.Time { return fuzzNow }).sessionCookie().Value
	ver, rest, _ := strings.Cut(expired, ".")
	_, mac, _ := strings.Cut(rest, ".")
	for _, c := range []string{
		expired,
		other,
		ver + ".99999999999." + mac,
		ver + ".+99999999999." + mac,
		expired[:len(expired)-2] + "xx",
		"v2" + strings.TrimPrefix(expired, "v1"),
		"v1..",
		"v1.1",
		"v1.-9223372036854775808." + mac,
		"",
		"\"v1.1.x\"",
	} {
		f.Add(c, "", []byte(""))
	}
	for _, h := range []string{
		"Bearer nl1.AAAA",
		"Basic nl1.AAAA",
		"bearer " + strings.TrimSuffix(fuzzToken, "h"),
		"Bearer",
		"Bearer  ",
	} {
		f.Add("", h, []byte(""))
	}
	for _, b := range []string{
		url.Values{"token": {"nl1.AAAA"}}.Encode(),
		"token=",
		"token=%zz",
		"token=a&token=b",
		"a=b;c=d",
		strings.Repeat("token=x&", 1200),
	} {
		f.Add("", "", []byte(b))
	}
	s, err := New(fuzzSource{log: events.NewLog("n1", 10)}, Options{Addr: "0.0.0.0:7947", Token: fuzzToken})
	if err != nil {
		f.Fatal(err)
	}
	s.now = func() time.Time { return fuzzNow }
	s.auth.now = s.now
	h := s.Handler()
	f.Fuzz(func(t *testing.T, cookie, authz string, form []byte) {
		if s.auth.validSession(cookie) {
			t.Fatalf("validSession accepted %q, which the dashboard did not make", cookie)
		}

		// The API with the cookie (as a raw Cookie header) and the header.
		r := httptest.NewRequest(http.MethodGet, "/api/status", nil)
		r.Host = "203.0.113.7:7947"
		r.Header.Set("Cookie", cookieName+"="+cookie)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if want := bearerOK(authz); (w.Code == http.StatusOK) != want {
			t.Fatalf("GET /api/status with cookie %q, Authorization %q: status %d, want authorized=%v", cookie, authz, w.Code, want)
		}
		if w.Code != http.StatusOK && w.Code != http.StatusUnauthorized {
			t.Fatalf("GET /api/status: status %d", w.Code)
		}

		// The login form.
		r = httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(string(form)))
		r.Host = "203.0.113.7:7947"
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		resp := w.Result()
		vals, perr := url.ParseQuery(string(form))
		right := perr == nil && len(form) <= 8<<10 && strings.TrimSpace(vals.Get("token")) == fuzzToken
		if cs := resp.Cookies(); len(cs) > 0 && !right {
			t.Fatalf("POST /login with %q set cookies %v", form, cs)
		}
		switch {
		case resp.StatusCode == http.StatusBadRequest:
		case resp.StatusCode == http.StatusSeeOther && right == (resp.Header.Get("Location") == "/"):
		default:
			t.Fatalf("POST /login with %q: status %d, Location %q", form, resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}
