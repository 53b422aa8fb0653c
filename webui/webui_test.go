package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
	"github.com/prometheus/client_golang/prometheus"
)

const testToken = "nl1.dGhpcyBpcyBub3QgYSByZWFsIHNlY3JldCwgb25seSBhIHRlc3Q"

func newTestServer(t *testing.T, src Source, opt Options) *Server {
	t.Helper()
	s, err := New(src, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.now = func() time.Time { return testNow }
	return s
}

// do sends a request to the handler as if addressed to host.
func do(t *testing.T, h http.Handler, method, target string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, target, body)
	r.Host = "127.0.0.1:7947"
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func readAll(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPagesAndStaticOnLoopback(t *testing.T) {
	h := newTestServer(t, newFakeSource(), Options{}).Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `id="topology"`},
		{"/static/app.js", "javascript", "EventSource"},
		{"/static/app.css", "text/css", "prefers-color-scheme: dark"},
		{"/static/favicon.svg", "image/svg+xml", "<svg"},
	} {
		resp := do(t, h, "GET", tc.path, nil, nil)
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: status %d", tc.path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	// No login on loopback: the page has no logout button.
	if body := readAll(t, do(t, h, "GET", "/", nil, nil)); strings.Contains(body, "/logout") {
		t.Error("loopback dashboard shows a logout button")
	}
	if resp := do(t, h, "GET", "/nothing", nil, nil); resp.StatusCode != 404 {
		t.Errorf("GET /nothing: status %d, want 404", resp.StatusCode)
	}
	if resp := do(t, h, "POST", "/api/snapshot", nil, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/snapshot: status %d, want 405 (read-only)", resp.StatusCode)
	}
}

func TestPagesHaveNoExternalReferences(t *testing.T) {
	h := newTestServer(t, newFakeSource(), Options{}).Handler()
	for _, p := range []string{"/", "/static/app.js", "/static/app.css"} {
		body := readAll(t, do(t, h, "GET", p, nil, nil))
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			for _, line := range strings.Split(body, "\n") {
				if strings.Contains(line, bad) && !strings.Contains(line, "http://www.w3.org/2000/svg") {
					t.Errorf("%s references something outside: %q", p, strings.TrimSpace(line))
				}
			}
		}
	}
}

func TestLoopbackRefusesOtherHostNames(t *testing.T) {
	h := newTestServer(t, newFakeSource(), Options{}).Handler()
	for host, want := range map[string]int{
		"127.0.0.1:7947":       200,
		"localhost:7947":       200,
		"[::1]:7947":           200,
		"evil.example:7947":    http.StatusMisdirectedRequest,
		"10.77.0.11:7947":      http.StatusMisdirectedRequest,
		"127.0.0.1.nip.io":     http.StatusMisdirectedRequest,
		"app.localhost:7947":   200,
		"LOCALHOST":            200,
		"":                     http.StatusMisdirectedRequest,
		"[::ffff:127.0.0.1]:1": 200,
	} {
		resp := do(t, h, "GET", "/api/status", nil, map[string]string{"Host": host})
		if resp.StatusCode != want {
			t.Errorf("Host %q: status %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestSnapshotJSON(t *testing.T) {
	src := newFakeSource()
	s := newTestServer(t, src, Options{})
	h := s.Handler()
	get := func() Snapshot {
		resp := do(t, h, "GET", "/api/snapshot", nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /api/snapshot: status %d", resp.StatusCode)
		}
		var snap Snapshot
		if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
			t.Fatal(err)
		}
		return snap
	}
	snap := get()
	if snap.Status.Node.Name != "node1" || len(snap.Status.Members) != 3 {
		t.Errorf("status: %+v", snap.Status)
	}
	var kinds []string
	for _, k := range Kinds {
		if _, ok := snap.Objects[k]; ok {
			kinds = append(kinds, k)
		}
	}
	if diff := cmp.Diff([]string{"Namespace", "Pod"}, kinds); diff != "" {
		t.Errorf("kinds in snapshot (-want +got):\n%s", diff)
	}
	if len(snap.Events) != 1 || snap.Events[0].Kind != events.Join {
		t.Errorf("events: %+v", snap.Events)
	}
	if snap.Auth {
		t.Error("loopback snapshot says auth")
	}

	// A kind the source learns appears; the cache lasts half an interval.
	src.setObjects("Service", []api.Object{})
	s.now = func() time.Time { return testNow.Add(time.Minute) }
	snap = get()
	if list, ok := snap.Objects["Service"]; !ok || list == nil || len(list) != 0 {
		t.Errorf("Service after the source knows it: %v (present %v)", list, ok)
	}

	resp := do(t, h, "GET", "/api/objects?kind=Pod", nil, nil)
	var pods []api.Object
	if err := json.NewDecoder(resp.Body).Decode(&pods); err != nil || len(pods) != 2 {
		t.Errorf("GET /api/objects?kind=Pod: %v %v", pods, err)
	}
	if resp := do(t, h, "GET", "/api/objects?kind=NetworkPolicy", nil, nil); resp.StatusCode != 404 {
		t.Errorf("GET /api/objects?kind=NetworkPolicy: status %d, want 404", resp.StatusCode)
	}
	resp = do(t, h, "GET", "/api/events", nil, nil)
	var evs []events.Event
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil || len(evs) != 1 {
		t.Errorf("GET /api/events: %v %v", evs, err)
	}
}

func TestNewChecksAddressAndToken(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok, auth    bool
	}{
		{"", "", true, false},
		{"127.0.0.1:7947", "", true, false},
		{"localhost:8080", "", true, false},
		{"[::1]:7947", "", true, false},
		{"10.77.0.11:7947", "", false, false},
		{"0.0.0.0:7947", "", false, false},
		{":7947", "", false, false},
		{"10.77.0.11:7947", testToken, true, true},
		{":7947", testToken, true, true},
		{"10.77.0.11", testToken, false, false},
	} {
		s, err := New(newFakeSource(), Options{Addr: tc.addr, Token: tc.token})
		if (err == nil) != tc.ok {
			t.Errorf("New(addr %q, token %v): err %v, want ok %v", tc.addr, tc.token != "", err, tc.ok)
			continue
		}
		if err == nil && (s.auth != nil) != tc.auth {
			t.Errorf("New(addr %q): login required %v, want %v", tc.addr, s.auth != nil, tc.auth)
		}
	}
}

func TestAuthOnNonLoopback(t *testing.T) {
	s := newTestServer(t, newFakeSource(), Options{Addr: "10.77.0.11:7947", Token: testToken})
	s.auth.now = func() time.Time { return testNow }
	h := s.Handler()

	// Without credentials: pages give the login page, the API and metrics 401.
	resp := do(t, h, "GET", "/", nil, map[string]string{"Host": "10.77.0.11:7947"})
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, `<form id="login"`) || strings.Contains(body, `id="topology"`) {
		t.Errorf("GET / without login: status %d, want the login page:\n%s", resp.StatusCode, body)
	}
	for _, p := range []string{"/api/snapshot", "/api/status", "/api/events", "/api/objects?kind=Pod", "/api/stream", "/metrics"} {
		resp := do(t, h, "GET", p, nil, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without login: status %d, want 401", p, resp.StatusCode)
		}
		if b := readAll(t, resp); strings.Contains(b, "node1") {
			t.Errorf("GET %s without login leaks data: %s", p, b)
		}
	}
	// Static files are no secret: the login page needs them.
	if resp := do(t, h, "GET", "/static/app.css", nil, nil); resp.StatusCode != 200 {
		t.Errorf("GET /static/app.css without login: %d", resp.StatusCode)
	}

	// Bearer token.
	for tok, want := range map[string]int{
		testToken:                  200,
		"nl1.wrong":                401,
		testToken + "x":            401,
		"":                         401,
		strings.ToUpper(testToken): 401,
	} {
		for _, p := range []string{"/api/snapshot", "/metrics"} {
			resp := do(t, h, "GET", p, nil, map[string]string{"Authorization": "Bearer " + tok})
			if resp.StatusCode != want {
				t.Errorf("GET %s with bearer %q: status %d, want %d", p, tok, resp.StatusCode, want)
			}
		}
	}
	if resp := do(t, h, "GET", "/api/snapshot", nil, map[string]string{"Authorization": "Basic " + testToken}); resp.StatusCode != 401 {
		t.Errorf("Basic scheme accepted: %d", resp.StatusCode)
	}

	// Login form: a wrong token is refused and sets no cookie.
	form := func(tok string) *http.Response {
		return do(t, h, "POST", "/login", strings.NewReader(url.Values{"token": {tok}}.Encode()),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	}
	resp = form("nl1.AAAA")
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 0 || loc != "/login?failed=1" {
		t.Errorf("wrong token: status %d, cookies %v, Location %q", resp.StatusCode, resp.Cookies(), loc)
	}
	resp = do(t, h, "GET", "/login?failed=1", nil, nil)
	if body := readAll(t, resp); !strings.Contains(body, `id="login-error"`) || !strings.Contains(body, `<form id="login"`) {
		t.Errorf("the login page after a refusal does not say so:\n%s", body)
	}
	if body := readAll(t, do(t, h, "GET", "/login", nil, nil)); strings.Contains(body, `id="login-error"`) {
		t.Error("the login page shows an error before any attempt")
	}

	// The right token sets an HttpOnly, SameSite=Strict cookie that is not the token.
	resp = form(testToken + "\n")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login set %d cookies", len(cookies))
	}
	c := cookies[0]
	if c.Name != cookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("cookie attributes: %+v", c)
	}
	secret := strings.TrimPrefix(testToken, "nl1.")
	if strings.Contains(c.Value, secret) || strings.Contains(c.Value, secret[:12]) {
		t.Errorf("cookie holds the token: %q", c.Value)
	}
	withCookie := map[string]string{"Cookie": c.Name + "=" + c.Value}
	resp = do(t, h, "GET", "/", nil, withCookie)
	body = readAll(t, resp)
	if !strings.Contains(body, `id="topology"`) || !strings.Contains(body, "/logout") {
		t.Errorf("GET / with the session cookie does not show the dashboard with a logout button")
	}
	if resp := do(t, h, "GET", "/login", nil, withCookie); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /login when logged in: status %d, want a redirect", resp.StatusCode)
	}
	for _, p := range []string{"/api/snapshot", "/metrics"} {
		if resp := do(t, h, "GET", p, nil, withCookie); resp.StatusCode != 200 {
			t.Errorf("GET %s with the session cookie: %d", p, resp.StatusCode)
		}
	}

	// Tampered and expired cookies are refused.
	tampered := c.Value[:len(c.Value)-2] + "xx"
	if resp := do(t, h, "GET", "/api/snapshot", nil, map[string]string{"Cookie": c.Name + "=" + tampered}); resp.StatusCode != 401 {
		t.Errorf("tampered cookie: status %d", resp.StatusCode)
	}
	ver, rest, _ := strings.Cut(c.Value, ".")
	_, mac, _ := strings.Cut(rest, ".")
	longer := ver + ".99999999999." + mac
	if resp := do(t, h, "GET", "/api/snapshot", nil, map[string]string{"Cookie": c.Name + "=" + longer}); resp.StatusCode != 401 {
		t.Errorf("cookie with a changed expiry: status %d", resp.StatusCode)
	}
	s.auth.now = func() time.Time { return testNow.Add(sessionTTL + time.Second) }
	if resp := do(t, h, "GET", "/api/snapshot", nil, withCookie); resp.StatusCode != 401 {
		t.Errorf("expired cookie: status %d", resp.StatusCode)
	}
	// A cookie made with another token is refused.
	other := newAuthenticator("nl1.another", func() time.Time { return testNow })
	if resp := do(t, h, "GET", "/api/snapshot", nil, map[string]string{"Cookie": cookieName + "=" + other.sessionCookie().Value}); resp.StatusCode != 401 {
		t.Errorf("cookie of another cluster: status %d", resp.StatusCode)
	}

	// Logout clears the cookie.
	resp = do(t, h, "POST", "/logout", nil, withCookie)
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Errorf("logout cookies: %+v", cs)
	}

	// On a non-loopback address any Host name is fine: the token protects it.
	if resp := do(t, h, "GET", "/api/status", nil, map[string]string{"Host": "node1.example", "Authorization": "Bearer " + testToken}); resp.StatusCode != 200 {
		t.Errorf("authorized request to a DNS name: %d", resp.StatusCode)
	}
}

// /metrics serves the registry it is given, as it is: the dashboard
// registers nothing there (the agent's metrics live in node/metrics).
func TestMetricsServesGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "netloom_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	for range 2 { // two servers may share one registry
		s := newTestServer(t, newFakeSource(), Options{Registry: reg})
		resp := do(t, s.Handler(), "GET", "/metrics", nil, nil)
		body := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(body, "\nnetloom_test_total 3\n") {
			t.Errorf("GET /metrics: status %d, want the registry's counter:\n%s", resp.StatusCode, body)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 1 {
		var names []string
		for _, f := range fams {
			names = append(names, f.GetName())
		}
		t.Errorf("the dashboard registered metrics: the registry has %v", names)
	}

	// Without a registry, /metrics is empty.
	resp := do(t, newTestServer(t, newFakeSource(), Options{}).Handler(), "GET", "/metrics", nil, nil)
	if body := readAll(t, resp); resp.StatusCode != 200 || strings.TrimSpace(body) != "" {
		t.Errorf("GET /metrics without a registry: status %d:\n%s", resp.StatusCode, body)
	}
}

func TestStreamDeliversSnapshotsAndEvents(t *testing.T) {
	src := newFakeSource()
	s := newTestServer(t, src, Options{})
	s.now = time.Now
	s.interval = 100 * time.Millisecond
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/stream", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	type message struct{ event, data string }
	msgs := make(chan message, 16)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var m message
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				m.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				m.data += strings.TrimPrefix(line, "data: ")
			case line == "" && m.event != "":
				msgs <- m
				m = message{}
			}
		}
	}()
	next := func(want string) message {
		t.Helper()
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("stream ended waiting for %q", want)
				}
				if m.event == want {
					return m
				}
			case <-ctx.Done():
				t.Fatalf("no %q message", want)
			}
		}
	}

	// First: a full snapshot with the past events.
	m := next("snapshot")
	var snap Snapshot
	if err := json.Unmarshal([]byte(m.data), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Status.Members) != 3 || len(snap.Events) != 1 || len(snap.Objects["Pod"]) != 2 {
		t.Errorf("first snapshot: %d members, %d events, %d pods", len(snap.Status.Members), len(snap.Events), len(snap.Objects["Pod"]))
	}

	// An event arrives as it happens.
	src.log.Add(events.Leave, "node3", "member node3 left the cluster")
	m = next("event")
	var e events.Event
	if err := json.Unmarshal([]byte(m.data), &e); err != nil || e.Kind != events.Leave || e.Message != "member node3 left the cluster" {
		t.Errorf("event: %+v %v", e, err)
	}

	// Later snapshots carry changes (and no events).
	src.setState("node3", "left")
	deadline := time.After(5 * time.Second)
	for {
		m = next("snapshot")
		var later Snapshot
		if err := json.Unmarshal([]byte(m.data), &later); err != nil {
			t.Fatal(err)
		}
		if len(later.Events) != 0 {
			t.Errorf("a periodic snapshot carries %d events", len(later.Events))
		}
		if later.Status.Members[2].State == "left" {
			break
		}
		select {
		case <-deadline:
			t.Fatal("node3 never shows as left in the stream")
		default:
		}
	}
}

func TestServeStopsWithContextDespiteOpenStream(t *testing.T) {
	s := newTestServer(t, newFakeSource(), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestRunReportsBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newTestServer(t, newFakeSource(), Options{Addr: ln.Addr().String()})
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--ui-addr") {
		t.Errorf("Run on a busy address: %v", err)
	}
}
