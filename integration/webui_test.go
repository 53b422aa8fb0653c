package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/node/demo"
)

// TestWebUI drives the dashboard of a real 3-node cluster in headless
// Chromium. Chromium runs in the host's namespace and reaches the agents'
// dashboards through demo forwarders (host 127.0.0.1 -> node namespace).
// Screenshots go to $NETLOOM_ARTIFACTS (or a temporary directory).
func TestWebUI(t *testing.T) {
	needRoot(t)
	if out, _ := exec.Command(exe, "agent", "--help").CombinedOutput(); !strings.Contains(string(out), "--ui-addr") {
		t.Skip("this netloom binary has no --ui-addr: the dashboard is not wired into the agent yet")
	}
	chrome := webuiChromium(t)
	artifacts := webuiArtifacts(t)

	c := webuiCluster(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	// Traffic between every pair of pods, so that node1's tunnels have
	// fresh handshakes (green lines).
	pods := c.Pods()
	for i := range pods {
		for j := i + 1; j < len(pods); j++ {
			if err := demo.Ping(pods[i].NS, pods[j].IP); err != nil {
				t.Fatalf("ping %s -> %s: %v", pods[i].Name, pods[j].Name, err)
			}
		}
	}

	// node1's dashboard on its loopback; node2's on its underlay address.
	ui1 := webuiForward(t, c, n1, demo.NodeUIAddr)
	ui2 := webuiForward(t, c, n2, n2.Addr.String()+":7947")

	// Bound to a non-loopback address, the API refuses without the token.
	if code := webuiGet(t, ui2+"api/snapshot", ""); code != http.StatusUnauthorized {
		t.Errorf("node2 /api/snapshot without the token: status %d, want 401", code)
	}
	if code := webuiGet(t, ui2+"metrics", c.Token); code != http.StatusOK {
		t.Errorf("node2 /metrics with the bearer token: status %d, want 200", code)
	}

	b := newWebuiBrowser(t, chrome)

	t.Run("overview", func(t *testing.T) {
		b.do(t, "open node1's dashboard", chromedp.Navigate(ui1))
		b.poll(t, "three alive nodes in the table",
			`document.querySelectorAll('#nodes tbody tr[data-state="alive"]').length === 3`)
		b.poll(t, "three tunnels in the topology",
			`document.querySelectorAll('#topology line.tunnel').length === 3`)
		b.poll(t, "node1's two tunnels green (fresh handshakes)",
			`document.querySelectorAll('#topology line.tunnel.hs-fresh').length === 2`)
		b.poll(t, "the three pods with their addresses",
			`document.querySelectorAll('#pods tr[data-pod]').length === 3`)
		b.poll(t, "the live stream", `document.querySelector('#live').dataset.mode === 'live'`)
		b.poll(t, "join events", `document.querySelectorAll('#events tr[data-kind="join"]').length >= 2`)
		// Services and policies are features of the agent: their sections
		// show, empty, before any object exists.
		b.poll(t, "empty services and policies sections",
			`!document.querySelector('#sec-services').hidden && !document.querySelector('#sec-policies').hidden &&
			 !document.querySelector('#services-empty').hidden && !document.querySelector('#policies-empty').hidden`)
		for _, p := range pods {
			b.poll(t, "pod "+p.Name+" with its IP",
				fmt.Sprintf(`document.querySelector('#pods tr[data-pod="default/%s"]')?.textContent.includes(%q)`, p.Name, p.IP.String()))
		}
		b.screenshot(t, artifacts, "overview.png")
		b.withDarkScheme(t, func() { b.screenshot(t, artifacts, "overview-dark.png") })
	})

	// Two VIPs, one that node1 announces and one that node3 does (so that
	// node3's leaving later moves it), as every node ranks them.
	all := []string{n1.Name, n2.Name, n3.Name}
	vipWeb, vipAPI := webuiPickVIP(t, all, n1.Name), webuiPickVIP(t, all, n3.Name)

	t.Run("services", func(t *testing.T) {
		// Labels for the demo pods, a pool with room for two VIPs, two
		// LoadBalancer services that ask for them and a third that finds
		// the pool full.
		webuiApply(t, n1, webuiManifest(vipWeb, vipAPI))
		row := `document.querySelector('#services tr[data-service="default/web"]')`
		b.poll(t, "service web with its VIP, announced by this node",
			row+`?.dataset.vip === '`+vipWeb.String()+`' && `+row+`.dataset.owner === 'node1' &&
			 `+row+`.classList.contains('mine') && `+row+`.querySelector('td.owner').textContent.includes('this node')`)
		b.poll(t, "service web's endpoints: node1-p1 and node2-p1, ready, with their addresses",
			fmt.Sprintf(`(() => { const eps = Array.from(%s.querySelectorAll('table.eps tr[data-pod]'));
			  return eps.length === 2 && eps.every(e => e.dataset.ready === 'true') &&
			    eps[0].dataset.pod === 'default/node1-p1' && eps[0].textContent.includes(%q) && eps[0].textContent.includes('node1') &&
			    eps[1].dataset.pod === 'default/node2-p1' && eps[1].textContent.includes(%q) && eps[1].textContent.includes('node2'); })()`,
				row, c.Pod("node1-p1").IP.String(), c.Pod("node2-p1").IP.String()))
		b.poll(t, "service api with its VIP, announced by node3",
			`document.querySelector('#services tr[data-service="default/api"]')?.dataset.vip === '`+vipAPI.String()+`' &&
			 document.querySelector('#services tr[data-service="default/api"]').dataset.owner === 'node3'`)
		b.poll(t, "service queue pending: the pool is full",
			`document.querySelector('#services tr[data-service="default/queue"] td.ext')?.textContent.includes('pending: address pool "lan" is full')`)
		b.poll(t, "the cluster IPs", `Array.from(document.querySelectorAll('#services > tbody > tr')).every(r => /^10\.96\./.test(r.children[2].textContent))`)
		b.poll(t, "the VIP badges on node1 and node3 in the topology",
			`document.querySelector('#topology g.vip-badge[data-node="node1"]')?.dataset.vips === '`+vipWeb.String()+`' &&
			 document.querySelector('#topology g.vip-badge[data-node="node3"]')?.dataset.vips === '`+vipAPI.String()+`' &&
			 !document.querySelector('#topology g.vip-badge[data-node="node2"]')`)
		b.poll(t, "the pool", `document.querySelector('#pools')?.textContent.includes('lan')`)
		b.poll(t, "the pods' labels", `document.querySelector('#pods tr[data-pod="default/node3-p1"]')?.textContent.includes('role=client')`)
		b.screenshotOf(t, artifacts, "services.png", "sec-services")
		b.screenshotOf(t, artifacts, "topology-vips.png", "sec-topology")
		b.screenshot(t, artifacts, "dashboard-services.png")
		b.withDarkScheme(t, func() {
			b.screenshotOf(t, artifacts, "services-dark.png", "sec-services")
			b.screenshotOf(t, artifacts, "topology-vips-dark.png", "sec-topology")
		})
	})

	t.Run("policies", func(t *testing.T) {
		row := `document.querySelector('#policies tr[data-policy="default/web-from-clients"]')`
		b.poll(t, "the policy with the two pods it selects and its rule",
			row+` && Array.from(`+row+`.querySelectorAll('.chip.pod')).map(c => c.dataset.pod).join(' ') === 'default/node1-p1 default/node2-p1' &&
			 `+row+`.querySelector('td.rules').dataset.rules === '1' && `+row+`.textContent.includes('role=client')`)
		b.poll(t, "the local pod marked", row+`.querySelector('.chip.pod.local')?.dataset.pod === 'default/node1-p1'`)
		// node3-p1 is a client: let in. node2-p1 is not: dropped at node1,
		// where node1-p1 lives. The policy may still be on its way to node1's
		// table, so try until the counters show it.
		client, other, web := c.Pod("node3-p1"), c.Pod("node2-p1"), c.Pod("node1-p1")
		ingress := row + `?.querySelector('td.counters[data-dir="ingress"]')`
		deadline := time.Now().Add(30 * time.Second)
		for {
			denied := inNS(other.NS, nil, nil, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", web.IP.String())
			_ = demo.Ping(client.NS, web.IP)
			if denied.err != nil && b.eval(t, `Number(`+ingress+`?.dataset.dropped) > 0 && Number(`+ingress+`?.dataset.allowed) > 0`) == "true" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no dropped and allowed packets on the page after pinging %s from %s (last ping: %v) and from %s; ingress cell: %s",
					web.Name, other.Name, denied, client.Name, b.eval(t, ingress+`?.outerHTML`))
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err := demo.Ping(client.NS, web.IP); err != nil {
			t.Errorf("the client %s cannot reach %s through the policy: %v", client.Name, web.Name, err)
		}
		b.poll(t, "the drops stand out", ingress+`.querySelector('.cnt.dropped.some')?.textContent.trim().endsWith('dropped')`)
		b.poll(t, "no egress counting for an ingress policy", row+`.querySelector('td.counters[data-dir="egress"]').textContent.trim() === '—'`)
		b.poll(t, "the compiled rules", `/\d+ nftables rules? on node1/.test(document.querySelector('#policy-rules').textContent)`)
		b.screenshotOf(t, artifacts, "policies.png", "sec-policies")
		b.screenshot(t, artifacts, "dashboard-policies.png")
		b.withDarkScheme(t, func() {
			b.screenshotOf(t, artifacts, "policies-dark.png", "sec-policies")
			b.screenshot(t, artifacts, "dashboard-dark.png")
		})
	})

	t.Run("node leaves", func(t *testing.T) {
		// A marker in the page proves there was no reload.
		b.eval(t, `window.__netloomMarker = 42`)
		if err := c.Leave(context.Background(), n3); err != nil {
			t.Fatal(err)
		}
		b.poll(t, "node3 shown as left",
			`document.querySelector('#nodes tr[data-node="node3"]')?.dataset.state === 'left'`)
		b.poll(t, "the tunnels to node3 gone",
			`document.querySelectorAll('#topology line.tunnel[data-a="node3"], #topology line.tunnel[data-b="node3"]').length === 0 &&
			 document.querySelectorAll('#topology line.tunnel').length === 1`)
		b.poll(t, "a leave event for node3",
			`Array.from(document.querySelectorAll('#events tr[data-kind="leave"]')).some(r => r.textContent.includes('node3'))`)
		// node3 handed its VIP over before it went.
		b.poll(t, "a VIP failover event for "+vipAPI.String(),
			`Array.from(document.querySelectorAll('#events tr[data-kind="vip-failover"]')).some(r => r.textContent.includes('`+vipAPI.String()+`') &&
			 r.classList.contains('ev-vip') && !!r.querySelector('.kind.badge'))`)
		b.poll(t, "service api announced by another node",
			`['node1', 'node2'].includes(document.querySelector('#services tr[data-service="default/api"]')?.dataset.owner) &&
			 !document.querySelector('#topology g.vip-badge[data-node="node3"]') &&
			 Array.from(document.querySelectorAll('#topology g.vip-badge')).some(g => g.dataset.vips.split(' ').includes('`+vipAPI.String()+`'))`)
		if v := b.eval(t, `window.__netloomMarker === 42`); v != "true" {
			t.Error("the page was reloaded; it should have updated in place")
		}
		b.screenshot(t, artifacts, "node3-left.png")
		b.screenshotOf(t, artifacts, "events-failover.png", "sec-events")
	})

	t.Run("polling fallback", func(t *testing.T) {
		b.do(t, "open node1's dashboard without the stream", chromedp.Navigate(ui1+"?poll=1"))
		b.poll(t, "updates by polling", `document.querySelector('#live').dataset.mode === 'polling'`)
		b.poll(t, "node3 as left and node2 alive",
			`document.querySelector('#nodes tr[data-node="node3"]')?.dataset.state === 'left' &&
			 document.querySelector('#nodes tr[data-node="node2"]')?.dataset.state === 'alive'`)
	})

	t.Run("login", func(t *testing.T) {
		b.do(t, "open node2's dashboard", chromedp.Navigate(ui2))
		b.poll(t, "the login form", `!!document.querySelector('form#login') && !document.querySelector('#topology')`)
		b.screenshot(t, artifacts, "login.png")

		b.do(t, "log in with a wrong token",
			chromedp.SendKeys(chromedp.ID("token"), "nl1.not-the-token"),
			chromedp.Submit(chromedp.ID("token")))
		b.poll(t, "the login refused", `!!document.querySelector('#login-error') && !!document.querySelector('form#login')`)
		b.screenshot(t, artifacts, "login-refused.png")

		b.do(t, "log in with the cluster token",
			chromedp.SendKeys(chromedp.ID("token"), c.Token),
			chromedp.Submit(chromedp.ID("token")))
		b.poll(t, "node2's dashboard after login",
			`document.querySelector('#self-name')?.textContent === 'node2' &&
			 document.querySelectorAll('#nodes tbody tr').length >= 2 &&
			 !!document.querySelector('form.logout')`)
		b.poll(t, "the live stream after login", `document.querySelector('#live').dataset.mode === 'live'`)
		if v := b.eval(t, `document.cookie`); strings.Contains(v, "netloom_session") || strings.Contains(v, strings.TrimPrefix(c.Token, "nl1.")) {
			t.Errorf("the session cookie is readable by scripts: %s", v)
		}
		b.screenshot(t, artifacts, "node2-after-login.png")
	})

	b.check(t, []string{ui1, ui2})
}

// webuiPickVIP returns the first address of 10.77.0.200-10.77.0.250 (on
// the demo underlay) whose announcer among nodes is owner.
func webuiPickVIP(t *testing.T, nodes []string, owner string) netip.Addr {
	t.Helper()
	a := netip.MustParseAddr("10.77.0.200")
	for range 50 {
		if lb.Owner(a, nodes) == owner {
			return a
		}
		a = a.Next()
	}
	t.Fatalf("no address in 10.77.0.200-10.77.0.250 is announced by %s", owner)
	return netip.Addr{}
}

// webuiManifest labels the three demo pods (node1-p1 and node2-p1 are
// app=web, node3-p1 is a client), and adds a pool of exactly the two VIPs,
// services web and api asking for them, service queue for which the pool
// is full, and a policy that lets only clients into the web pods.
func webuiManifest(vipWeb, vipAPI netip.Addr) string {
	return fmt.Sprintf(`apiVersion: netloom.io/v1alpha1
kind: AddressPool
metadata:
  name: lan
spec:
  addresses: [%[1]s, %[2]s]
---
apiVersion: v1
kind: Pod
metadata:
  name: node1-p1
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: node2-p1
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: node3-p1
  labels: {app: api, role: client}
spec:
  containers:
  - name: api
    image: api
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  loadBalancerIP: %[1]s
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  type: LoadBalancer
  loadBalancerIP: %[2]s
  selector: {app: api}
  ports: [{port: 9000, targetPort: 9000}]
---
apiVersion: v1
kind: Service
metadata:
  name: queue
spec:
  type: LoadBalancer
  selector: {app: queue}
  ports: [{port: 5672}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-clients
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: client}
`, vipWeb, vipAPI)
}

// webuiApply runs `netloom apply -f -` with the manifest against node n's
// socket.
func webuiApply(t *testing.T, n *demo.Node, manifest string) {
	t.Helper()
	r := inNS(n.NS, nil, []byte(manifest), exe, "apply", "--socket", n.Socket, "-f", "-")
	if r.err != nil {
		t.Fatalf("netloom apply on %s: %v", n.Name, r)
	}
	t.Logf("netloom apply on %s:\n%s", n.Name, strings.TrimSpace(r.stdout))
}

// webuiChromium finds the Chromium binary or fails with what to do.
func webuiChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed: the dashboard test needs it (apt-get install -y --no-install-recommends chromium; ./test.sh installs it)")
	return ""
}

func webuiArtifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NETLOOM_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "webui")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshots in %s", dir)
	return dir
}

// webuiCluster builds and starts a 3-node cluster with one pod per node;
// node2's dashboard is bound to its underlay address. It is removed at
// cleanup, also on failure.
func webuiCluster(t *testing.T) *demo.Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "nlwu")
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 2)
	rand.Read(rnd)
	ctx := context.Background()
	c, err := demo.Build(ctx, demo.Options{
		Prefix: "nlt-" + hex.EncodeToString(rnd), StateDir: dir, Exe: exe,
		Nodes: 3, PodsPerNode: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("build cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				b, _ := os.ReadFile(n.LogPath)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(lines) > 30 {
					lines = lines[len(lines)-30:]
				}
				t.Logf("---- end of %s's agent log (%s):\n%s", n.Name, n.LogPath, strings.Join(lines, "\n"))
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("remove cluster %s: %v", c.Opts.Prefix, err)
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	t.Logf("cluster %s, state in %s", c.Opts.Prefix, dir)
	n2 := c.Nodes[1]
	n2.ExtraArgs = []string{"--ui-addr", n2.Addr.String() + ":7947"}
	if err := c.StartAgents(ctx); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	if err := c.AddPods(ctx); err != nil {
		t.Fatalf("add pods: %v", err)
	}
	return c
}

// webuiForward serves target inside node n's namespace on a free port of
// the host's 127.0.0.1 and returns its URL ("http://127.0.0.1:PORT/").
func webuiForward(t *testing.T, c *demo.Cluster, n *demo.Node, target string) string {
	t.Helper()
	f, err := c.Forward(n, "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			t.Errorf("forwarder to %s in %s: %v", target, n.NS, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	// Wait until the dashboard answers through it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(f.URL() + "static/favicon.svg")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard of %s at %s (via %s) does not answer: %v", n.Name, target, f.URL(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return f.URL()
}

// webuiGet returns the status of a GET, with a bearer token when given.
func webuiGet(t *testing.T, u, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// webuiBrowser is one headless Chromium tab and what it reported.
type webuiBrowser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string // console errors, exceptions, error log entries
	requests []string // every URL the page asked for
}

func newWebuiBrowser(t *testing.T, chrome string) *webuiBrowser {
	t.Helper()
	profile, err := os.MkdirTemp("", "nlwu-chromium")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-default-browser-check", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &webuiBrowser{}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	t.Cleanup(func() {
		cancel()
		acancel()
		os.RemoveAll(profile)
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", chrome, err)
	}
	return b
}

// listen runs in the tab's event loop: it only records.
func (b *webuiBrowser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				if a.Value != nil {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			b.problems = append(b.problems, fmt.Sprintf("log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	}
}

// do runs steps with a bounded time.
func (b *webuiBrowser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// poll waits (bounded) until the JavaScript expression is true in the page;
// a navigation under way (after a form post) is waited out.
func (b *webuiBrowser) poll(t *testing.T, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline)+5*time.Second)
		_, err = chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
		cancel()
		// A navigation under way shows as "navigated" or as the old page's
		// execution context having gone ("Cannot find context").
		navigating := err != nil && (strings.Contains(err.Error(), "navigated") || strings.Contains(err.Error(), "Cannot find context"))
		if !navigating || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		text := b.eval(t, `document.body ? document.body.innerText.slice(0, 3000) : ''`)
		t.Fatalf("the page does not show %s: %v\npage text:\n%s", what, err, text)
	}
}

// eval returns the JSON of a JavaScript expression's value.
func (b *webuiBrowser) eval(t *testing.T, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return string(v)
}

func (b *webuiBrowser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// screenshotOf saves a picture of the element with the given id.
func (b *webuiBrowser) screenshotOf(t *testing.T, dir, name, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("screenshot %s of #%s: %v", name, id, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

// withDarkScheme runs f with the page in prefers-color-scheme: dark.
func (b *webuiBrowser) withDarkScheme(t *testing.T, f func()) {
	t.Helper()
	set := func(v string) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		p := emulation.SetEmulatedMediaParams{}
		if v != "" {
			p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}
		}
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
			t.Fatalf("emulate prefers-color-scheme %q: %v", v, err)
		}
	}
	set("dark")
	defer set("")
	if v := b.eval(t, `matchMedia('(prefers-color-scheme: dark)').matches && getComputedStyle(document.body).backgroundColor`); v == "false" || v == `"rgb(245, 247, 250)"` {
		t.Errorf("the page did not turn dark: body background %s", v)
	}
	f()
}

// check fails on console errors, exceptions, error log entries and on any
// request to something else than the dashboards.
func (b *webuiBrowser) check(t *testing.T, origins []string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("browser console: %s", p)
	}
	allowed := map[string]bool{}
	for _, o := range origins {
		u, _ := url.Parse(o)
		allowed[u.Host] = true
	}
	for _, r := range b.requests {
		u, err := url.Parse(r)
		if err != nil || u.Scheme == "data" || u.Scheme == "about" {
			continue
		}
		if !allowed[u.Host] {
			t.Errorf("the page requested something outside the dashboard: %s", r)
		}
	}
	t.Logf("%d requests from the page, all to the dashboards", len(b.requests))
}
