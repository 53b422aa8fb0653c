package webui

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	resp := do(t, s.Handler(), "GET", "/metrics", nil, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: status %d: %s", resp.StatusCode, body)
	}
	return body
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

func TestMetricsExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	src := newFakeSource()
	s := newTestServer(t, src, Options{Registry: reg})
	s.coll.now = func() time.Time { return testNow }
	src.setState("node3", "suspect")

	m.ObserveReconcile("mesh", 30*time.Millisecond, nil)
	m.ObserveReconcile("mesh", 10*time.Millisecond, errors.New("boom"))
	m.ObserveReconcile("firewall", 5*time.Millisecond, nil)
	m.SubnetConflict()
	m.StoreSyncLag(120 * time.Millisecond)
	m.StoreSyncLag(-time.Second) // clock skew counts as 0

	body := scrape(t, s)
	for series, want := range map[string]string{
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
		`netloom_pods`: "1",
		`netloom_reconcile_duration_seconds_count{subsystem="mesh"}`:                                         "2",
		`netloom_reconcile_duration_seconds_count{subsystem="firewall"}`:                                     "1",
		`netloom_reconcile_errors_total{subsystem="mesh"}`:                                                   "1",
		`netloom_reconcile_errors_total{subsystem="firewall"}`:                                               "0",
		`netloom_subnet_conflicts_total`:                                                                     "1",
		`netloom_store_sync_lag_seconds_count`:                                                               "2",
		`netloom_store_sync_lag_seconds_bucket{le="0.01"}`:                                                   "1",
		`netloom_info{node="node1",subnet="10.244.20.0/24",version="0.1.0-test",wireguard_mode="userspace"}`: "1",
	} {
		got, ok := sample(body, series)
		if !ok {
			t.Errorf("no sample %s", series)
			continue
		}
		if got != want {
			t.Errorf("%s = %s, want %s", series, got, want)
		}
	}
	for _, family := range []string{
		"# TYPE netloom_wireguard_peer_rx_bytes_total counter",
		"# TYPE netloom_reconcile_duration_seconds histogram",
		"# TYPE netloom_store_sync_lag_seconds histogram",
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
	body = scrape(t, s)
	if v, _ := sample(body, "netloom_wireguard_peers"); v != "1" {
		t.Errorf("peers after node2 left: %s", v)
	}
	if _, ok := sample(body, `netloom_wireguard_peer_rx_bytes_total{peer="node2"}`); ok {
		t.Error("node2 still exported as a peer after it left")
	}
}

func TestMetricsRegistryShared(t *testing.T) {
	// The agent may register the Go collector itself; New tolerates it.
	reg := prometheus.NewRegistry()
	if _, err := New(newFakeSource(), Options{Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(newFakeSource(), Options{Registry: reg}); err != nil {
		t.Errorf("second New on the same registry: %v", err)
	}
}

func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics
	m.ObserveReconcile("mesh", time.Second, errors.New("x"))
	m.SubnetConflict()
	m.StoreSyncLag(time.Second)
	NewMetrics(nil).ObserveReconcile("mesh", time.Second, nil) // unregistered works too
}
