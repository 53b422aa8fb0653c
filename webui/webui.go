// Package webui is netloom's embedded dashboard: a read-only overview of the
// cluster as one agent sees it (nodes, WireGuard tunnels, pods, services,
// policies, events), its JSON and server-sent-events handlers, and /metrics,
// all on one listener. It serves the metrics the agent gathers (package
// node/metrics) and defines none itself.
//
// The pages are plain HTML, CSS and JavaScript embedded in the binary: no
// CDN, no build step, no request leaves the page's origin.
//
// Bound to a loopback address the dashboard needs no login (but answers only
// requests addressed to a loopback name, against DNS rebinding). Bound to any
// other address it requires the cluster's join token: through a login form,
// which sets a cookie holding an HMAC of the token (never the token), or as
// "Authorization: Bearer <token>".
package webui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/netloom/netloom/mesh/objects"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the dashboard listens unless told otherwise.
const DefaultAddr = "127.0.0.1:7947"

// Kinds are the object kinds the dashboard asks its Source for. A Source
// returns nil for a kind it does not know; the snapshot then has no entry
// for it, and the page shows the sections of services and network policies
// empty.
var Kinds = objects.KindNames()

// Source is what the dashboard shows: one agent's view of the cluster.
type Source interface {
	// Status is the node and every member, with WireGuard peer statistics.
	Status() api.Status
	// Objects lists the stored objects of a kind; nil for an unknown kind.
	Objects(kind string) []api.Object
	// Events is the agent's event log.
	Events() *events.Log
}

// Options configure a Server.
type Options struct {
	// Addr is the listen address (default 127.0.0.1:7947).
	Addr string
	// Token is the cluster join token. Required when Addr is not a
	// loopback address: it is what a user logs in with.
	Token string
	// Registry is served at /metrics, behind the same login as the API
	// (default: an empty registry). The dashboard registers nothing on it.
	Registry prometheus.Gatherer
	// Log receives the server's diagnostics (default: discarded).
	Log *slog.Logger
}

// Server serves the dashboard, its JSON API and /metrics.
type Server struct {
	src      Source
	addr     string
	auth     *authenticator // nil: no login needed (loopback)
	reg      prometheus.Gatherer
	log      *slog.Logger
	handler  http.Handler
	pages    *template.Template
	static   http.Handler
	interval time.Duration // between two snapshots on /api/stream
	now      func() time.Time

	mu       sync.Mutex
	cached   *Snapshot
	cachedAt time.Time
}

// eventsInSnapshot bounds the events sent with a full snapshot.
const eventsInSnapshot = 300

//go:embed assets
var assets embed.FS

// New checks the options and prepares a server; Run serves it.
func New(src Source, opt Options) (*Server, error) {
	if src == nil {
		return nil, errors.New("web UI: no source of cluster state")
	}
	if opt.Addr == "" {
		opt.Addr = DefaultAddr
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	host, _, err := net.SplitHostPort(opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("web UI address %q is not host:port (e.g. %s): %w", opt.Addr, DefaultAddr, err)
	}
	s := &Server{src: src, addr: opt.Addr, log: opt.Log, interval: 2 * time.Second, now: time.Now}
	if !isLoopbackHost(host) {
		if opt.Token == "" {
			return nil, fmt.Errorf("web UI on %s is reachable from other hosts and needs the cluster token to protect it: give the token, or bind it to 127.0.0.1", opt.Addr)
		}
		s.auth = newAuthenticator(opt.Token, time.Now)
	}
	s.reg = opt.Registry
	if r, ok := s.reg.(*prometheus.Registry); s.reg == nil || ok && r == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.pages, err = template.ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("web UI: parse pages: %w", err)
	}
	sub, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, fmt.Errorf("web UI: static files: %w", err)
	}
	s.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	s.handler = s.routes()
	return s, nil
}

// Handler is the server's HTTP handler (pages, /api/*, /metrics).
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the address the server listens on, as configured.
func (s *Server) Addr() string { return s.addr }

// Run listens on Options.Addr and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("web UI: listen on %s (is another agent or program using it? pick another --ui-addr): %w", s.addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends; it closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Streams end with ctx: request contexts derive from it.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("web UI listening", "addr", ln.Addr().String(), "login", s.auth != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("web UI on %s: %w", s.addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Snapshot is what the dashboard draws: the status, the objects of every
// kind the source knows (kinds it does not know are absent) and, in full
// snapshots, the recent events.
type Snapshot struct {
	Time    time.Time               `json:"time"`
	Auth    bool                    `json:"auth"`
	Status  api.Status              `json:"status"`
	Objects map[string][]api.Object `json:"objects"`
	Events  []events.Event          `json:"events,omitempty"`
}

// snapshot returns the status and objects, computed at most once per half
// stream interval however many browsers watch.
func (s *Server) snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.cached != nil && now.Sub(s.cachedAt) < s.interval/2 && now.After(s.cachedAt) {
		return *s.cached
	}
	snap := &Snapshot{Time: now.UTC(), Auth: s.auth != nil, Status: s.src.Status(), Objects: map[string][]api.Object{}}
	if snap.Status.Members == nil {
		snap.Status.Members = []api.MemberStatus{}
	}
	for _, k := range Kinds {
		if list := s.src.Objects(k); list != nil {
			snap.Objects[k] = list
		}
	}
	s.cached, s.cachedAt = snap, now
	return *snap
}

// recentEvents is the tail of the event log.
func recentEvents(list []events.Event) []events.Event {
	if len(list) > eventsInSnapshot {
		list = list[len(list)-eventsInSnapshot:]
	}
	if list == nil {
		list = []events.Event{}
	}
	return list
}

func (s *Server) eventList() []events.Event {
	if l := s.src.Events(); l != nil {
		return l.List()
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /login", s.page)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.Handle("GET /static/", s.static)
	mux.HandleFunc("GET /api/snapshot", s.needAuth(func(w http.ResponseWriter, r *http.Request) {
		snap := s.snapshot()
		snap.Events = recentEvents(s.eventList())
		writeJSON(w, snap)
	}))
	mux.HandleFunc("GET /api/status", s.needAuth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.snapshot().Status)
	}))
	mux.HandleFunc("GET /api/objects", s.needAuth(func(w http.ResponseWriter, r *http.Request) {
		kind := r.URL.Query().Get("kind")
		list, ok := s.snapshot().Objects[kind]
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("this node knows no objects of kind %q", kind))
			return
		}
		writeJSON(w, list)
	}))
	mux.HandleFunc("GET /api/events", s.needAuth(func(w http.ResponseWriter, r *http.Request) {
		list := s.eventList()
		if list == nil {
			list = []events.Event{}
		}
		writeJSON(w, list)
	}))
	mux.HandleFunc("GET /api/stream", s.needAuth(s.stream))
	mux.Handle("GET /metrics", s.needAuth(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}).ServeHTTP))
	return s.guard(mux)
}

// guard sets the security headers of every answer and, when no login is
// needed, refuses requests addressed to a name that is not loopback (a
// DNS-rebinding page must not read the dashboard).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		if s.auth == nil && !isLoopbackHost(hostOnly(r.Host)) {
			http.Error(w, "this netloom dashboard is bound to a loopback address: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// needAuth answers 401 to a request without a valid session or token.
func (s *Server) needAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="netloom"`)
			writeError(w, http.StatusUnauthorized, "log in with the cluster token (the login page, or Authorization: Bearer <token>)")
			return
		}
		h(w, r)
	}
}

func (s *Server) authorized(r *http.Request) bool {
	return s.auth == nil || s.auth.check(r)
}

type pageData struct {
	Auth  bool
	Error string
}

// page serves the dashboard, or the login page to a visitor without a
// session.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !s.authorized(r) {
		d := pageData{Auth: true}
		if r.URL.Path == "/login" && r.URL.Query().Has("failed") {
			d.Error = "That is not this cluster's token. Copy it from 'netloom init' on the first node (or the agent's data dir)."
		}
		s.render(w, http.StatusOK, "login.html", d)
		return
	}
	if r.URL.Path == "/login" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, http.StatusOK, "index.html", pageData{Auth: s.auth != nil})
}

func (s *Server) render(w http.ResponseWriter, code int, name string, data pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages.ExecuteTemplate(w, name, data); err != nil {
		s.log.Debug("web UI: render page", "page", name, "err", err)
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if s.auth == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.render(w, http.StatusBadRequest, "login.html", pageData{Auth: true, Error: "The form could not be read; try again."})
		return
	}
	if !s.auth.validToken(r.PostForm.Get("token")) {
		// Post, redirect, get: the browser shows the refusal without a
		// failed request in its console, and a reload does not post again.
		s.log.Info("web UI: login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/login?failed=1", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, s.auth.sessionCookie())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// stream sends server-sent events: a full snapshot at once, a fresh
// snapshot (without events) every interval, and each event as it happens.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	var past []events.Event
	var ch <-chan events.Event
	if l := s.src.Events(); l != nil {
		var cancel func()
		past, ch, cancel = l.Follow(256)
		defer cancel()
	}
	send := func(name string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if _, err := fmt.Fprintf(w, "retry: 3000\n\n"); err != nil {
		return
	}
	snap := s.snapshot()
	snap.Events = recentEvents(past)
	if !send("snapshot", snap) {
		return
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			if !send("event", e) {
				return
			}
		case <-t.C:
			if !send("snapshot", s.snapshot()) {
				return
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: msg})
}

// hostOnly strips the port from a Host header.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// isLoopbackHost reports whether a listen or Host name is a loopback
// address or "localhost". An empty host (all addresses) is not.
func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
