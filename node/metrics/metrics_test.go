package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newTest registers metrics reading src on a new registry, with the
// collector's clock at testNow.
func newTest(t *testing.T, src Source) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg, src)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if m.coll != nil {
		m.coll.now = func() time.Time { return testNow }
	}
	return m, reg
}

// scrape returns reg's text exposition, as Prometheus reads it.
func scrape(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	w := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, err := io.ReadAll(w.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	if w.Code != 200 {
		t.Fatalf("GET /metrics: status %d: %s", w.Code, body)
	}
	return string(body)
}

// sample returns the value text of the sample line name{labels}.
func sample(body, series string) (string, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return "", false
	}
	return m[1], true
}

func checkSamples(t *testing.T, body string, want map[string]string) {
	t.Helper()
	for series, w := range want {
		got, ok := sample(body, series)
		if !ok {
			t.Errorf("no sample %s", series)
			continue
		}
		if got != w {
			t.Errorf("%s = %s, want %s", series, got, w)
		}
	}
}

func TestExposition(t *testing.T) {
	src := newFakeSource()
	m, reg := newTest(t, src)
	src.setState("node3", "suspect")

	m.ObserveReconcile("mesh", 30*time.Millisecond, nil)
	m.ObserveReconcile("mesh", 10*time.Millisecond, errors.New("boom"))
	m.ObserveReconcile("firewall", 5*time.Millisecond, nil)
	m.SubnetConflict()
	m.StoreSyncLag(120 * time.Millisecond)
	m.StoreSyncLag(-time.Second) // clock skew counts as 0
	m.VIPConflict()
	m.VIPFailover()
	m.VIPFailover()
	m.Repaired("firewall")
	m.Repaired("firewall")
	m.Repaired("mesh")
	m.Repaired("bridge") // a subsystem that never reconciled counts too

	body := scrape(t, reg)
	checkSamples(t, body, map[string]string{
		`netloom_members{state="alive"}`:                                  "2",
		`netloom_members{state="suspect"}`:                                "1",
		`netloom_members{state="dead"}`:                                   "0",
		`netloom_members{state="left"}`:                                   "0",
		`netloom_wireguard_peers`:                                         "2",
		`netloom_wireguard_peer_last_handshake_age_seconds{peer="node2"}`: "30",
		`netloom_wireguard_peer_last_handshake_age_seconds{peer="node3"}`: "+Inf",
		`netloom_wireguard_peer_rx_bytes_total{peer="node2"}`:             "476",
		`netloom_wireguard_peer_tx_bytes_total{peer="node2"}`:             "532",
		`netloom_wireguard_peer_rx_bytes_total{peer="node3"}`:             "0",
		`netloom_store_objects{kind="Pod"}`:                               "2",
		`netloom_store_objects{kind="Namespace"}`:                         "1",
		`netloom_pods`:                    "1",
		`netloom_vips_owned`:              "0",
		`netloom_vips{announced="true"}`:  "0",
		`netloom_vips{announced="false"}`: "0",
		`netloom_policy_rules`:            "0",
		`netloom_reconcile_duration_seconds_count{subsystem="mesh"}`:                                         "2",
		`netloom_reconcile_duration_seconds_count{subsystem="firewall"}`:                                     "1",
		`netloom_reconcile_errors_total{subsystem="mesh"}`:                                                   "1",
		`netloom_reconcile_errors_total{subsystem="firewall"}`:                                               "0",
		`netloom_repairs_total{subsystem="firewall"}`:                                                        "2",
		`netloom_repairs_total{subsystem="mesh"}`:                                                            "1",
		`netloom_repairs_total{subsystem="bridge"}`:                                                          "1",
		`netloom_subnet_conflicts_total`:                                                                     "1",
		`netloom_vip_conflicts_total`:                                                                        "1",
		`netloom_vip_failovers_total`:                                                                        "2",
		`netloom_store_sync_lag_seconds_count`:                                                               "2",
		`netloom_store_sync_lag_seconds_bucket{le="0.01"}`:                                                   "1",
		`netloom_info{node="node1",subnet="10.244.20.0/24",version="0.1.0-test",wireguard_mode="userspace"}`: "1",
	})
	for _, family := range []string{
		"# TYPE netloom_wireguard_peer_rx_bytes_total counter",
		"# TYPE netloom_reconcile_duration_seconds histogram",
		"# TYPE netloom_store_sync_lag_seconds histogram",
		"# TYPE netloom_repairs_total counter",
		"# HELP netloom_repairs_total Times this node found its kernel state changed behind its back (a table, map, WireGuard peer, route or bridge) and restored it.",
		"# TYPE go_goroutines gauge",
		"# TYPE process_resident_memory_bytes gauge",
	} {
		if !strings.Contains(body, family) {
			t.Errorf("exposition lacks %q", family)
		}
	}
	// Kinds the source does not know are not exported; the self member is no peer.
	for _, absent := range []string{`kind="Service"`, `peer="node1"`} {
		if strings.Contains(body, absent) {
			t.Errorf("exposition has %s", absent)
		}
	}

	// A member that left is no peer any more.
	src.setState("node2", "left")
	body = scrape(t, reg)
	if v, _ := sample(body, "netloom_wireguard_peers"); v != "1" {
		t.Errorf("peers after node2 left: %s", v)
	}
	if _, ok := sample(body, `netloom_wireguard_peer_rx_bytes_total{peer="node2"}`); ok {
		t.Error("node2 still exported as a peer after it left")
	}
}

func TestRepairsExportedAtZeroAfterFirstPass(t *testing.T) {
	m, reg := newTest(t, newFakeSource())
	if strings.Contains(scrape(t, reg), "netloom_repairs_total{") {
		t.Error("repairs exported before any subsystem reconciled")
	}
	m.ObserveReconcile("mesh", time.Millisecond, nil)
	checkSamples(t, scrape(t, reg), map[string]string{`netloom_repairs_total{subsystem="mesh"}`: "0"})
}

func TestVIPsAndPolicies(t *testing.T) {
	src := newFakeSource()
	src.addLB()
	_, reg := newTest(t, src)
	body := scrape(t, reg)
	checkSamples(t, body, map[string]string{
		`netloom_vips_owned`:                          "1",
		`netloom_vips{announced="true"}`:              "2",
		`netloom_vips{announced="false"}`:             "0",
		`netloom_policy_rules`:                        "14",
		`netloom_store_objects{kind="Service"}`:       "3",
		`netloom_store_objects{kind="NetworkPolicy"}`: "3",
		`netloom_store_objects{kind="AddressPool"}`:   "1",
		`netloom_policy_packets_total{direction="ingress",policy="default/web-from-clients",verdict="dropped"}`: "3",
		`netloom_policy_packets_total{direction="ingress",policy="default/web-from-clients",verdict="allowed"}`: "12",
		`netloom_policy_packets_total{direction="egress",policy="default/db-egress",verdict="dropped"}`:         "0",
	})
	if strings.Contains(body, `policy="default/elsewhere"`) {
		t.Error("a policy without counters on this node is exported")
	}
}

func TestWithoutSource(t *testing.T) {
	m, reg := newTest(t, nil)
	m.SubnetConflict()
	body := scrape(t, reg)
	checkSamples(t, body, map[string]string{`netloom_subnet_conflicts_total`: "1"})
	for _, absent := range []string{"netloom_members", "netloom_info"} {
		if strings.Contains(body, absent) {
			t.Errorf("exposition without a source has %s", absent)
		}
	}
	if !strings.Contains(body, "# TYPE go_goroutines gauge") {
		t.Error("exposition without a source lacks the Go collector")
	}
}

func TestRegistration(t *testing.T) {
	// The agent, or a library, may register the runtime collectors itself.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := New(reg, newFakeSource())
	if err != nil {
		t.Fatalf("New on a registry with the runtime collectors: %v", err)
	}
	// Registering netloom's metrics twice is an error, not a panic, and
	// leaves the first ones in place.
	if _, err := New(reg, newFakeSource()); err == nil {
		t.Error("second New on the same registry: no error")
	}
	m.VIPFailover()
	checkSamples(t, scrape(t, reg), map[string]string{`netloom_vip_failovers_total`: "1", `netloom_wireguard_peers`: "2"})
	// Without a source, the second New conflicts on the hooks alone.
	if _, err := New(reg, nil); err == nil {
		t.Error("New without a source on a registry with netloom's metrics: no error")
	}
	checkSamples(t, scrape(t, reg), map[string]string{`netloom_vip_failovers_total`: "1"})
}

func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics
	m.ObserveReconcile("mesh", time.Second, errors.New("x"))
	m.Repaired("mesh")
	m.SubnetConflict()
	m.StoreSyncLag(time.Second)
	m.VIPConflict()
	m.VIPFailover()
	u, err := New(nil, newFakeSource()) // unregistered works too
	if err != nil {
		t.Fatal(err)
	}
	u.ObserveReconcile("mesh", time.Second, nil)
	u.Repaired("mesh")
}
