// Package metrics is the agent's Prometheus metrics, in one registry that
// the dashboard serves at /metrics.
//
// They come in two sorts. State (members, WireGuard peers, stored objects,
// VIPs, policy rules and counters, pods) is read from a Source at every
// scrape, so it is never stale and costs nothing between scrapes. Events
// (reconcile passes and their errors, subnet and VIP conflicts, VIP
// failovers, store sync lag, kernel state repaired) are hooks on *Metrics
// that the agent calls as they happen. New also registers the Go runtime and
// process collectors.
//
// Metric names, labels and help texts are part of the product: dashboards
// and alerts use them, and the README lists them. Change them only with it.
package metrics

import (
	"errors"
	"fmt"
	"github.com/netloom/netloom/mesh/objects"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Source is the agent's state as the metrics read it at scrape time.
type Source interface {
	// Status is the node and every member, with WireGuard peer statistics
	// and the VIPs.
	Status() api.Status
	// Objects lists the stored objects of a kind (one of Kinds); nil for a
	// kind the source does not know, which is then not exported.
	Objects(kind string) []api.Object
}

// Kinds are the object kinds a scrape asks its Source for.
var Kinds = objects.KindNames()

// Metrics are the hooks the agent calls as things happen. A nil *Metrics
// does nothing, so callers need no checks.
type Metrics struct {
	coll *collector // nil without a Source

	reconcileDuration *prometheus.HistogramVec
	reconcileErrors   *prometheus.CounterVec
	repairs           *prometheus.CounterVec
	subnetConflicts   prometheus.Counter
	storeSyncLag      prometheus.Histogram
	vipConflicts      prometheus.Counter
	vipFailovers      prometheus.Counter
}

// New creates the agent's metrics and registers them on reg: the hooks, a
// collector that reads src at every scrape (none when src is nil), and the
// Go runtime and process collectors (which may be registered there
// already). A nil reg registers nothing, and the hooks still work. It fails
// when netloom's metrics are registered on reg already.
func New(reg prometheus.Registerer, src Source) (*Metrics, error) {
	m := &Metrics{
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netloom_reconcile_duration_seconds",
			Help:    "Duration of one reconcile pass of a subsystem.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"subsystem"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netloom_reconcile_errors_total",
			Help: "Reconcile passes of a subsystem that failed.",
		}, []string{"subsystem"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netloom_repairs_total",
			Help: "Times this node found its kernel state changed behind its back (a table, map, WireGuard peer, route or bridge) and restored it.",
		}, []string{"subsystem"}),
		subnetConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netloom_subnet_conflicts_total",
			Help: "Pod subnet conflicts this node lost (it claimed another subnet).",
		}),
		storeSyncLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "netloom_store_sync_lag_seconds",
			Help:    "How long a remote store write took to arrive here (its clock time to its merge).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		vipConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netloom_vip_conflicts_total",
			Help: "Service address conflicts seen (a younger service lost an address to an older one).",
		}),
		vipFailovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netloom_vip_failovers_total",
			Help: "VIPs that moved from one announcing node to another, as seen by this node.",
		}),
	}
	if src != nil {
		m.coll = newCollector(src)
	}
	if reg == nil {
		return m, nil
	}
	// The agent, or a library it embeds, may register the runtime
	// collectors itself.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("metrics: register runtime collector: %w", err)
			}
		}
	}
	own := []prometheus.Collector{m.reconcileDuration, m.reconcileErrors, m.repairs, m.subnetConflicts, m.storeSyncLag, m.vipConflicts, m.vipFailovers}
	if m.coll != nil {
		own = append(own, m.coll)
	}
	var done []prometheus.Collector
	for _, c := range own {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d) // leave reg as it was
			}
			return nil, fmt.Errorf("metrics: register netloom metrics (registered twice?): %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// ObserveReconcile records one reconcile pass of subsystem ("subnet",
// "mesh", "firewall", ...) that took d and ended with err. From its first
// pass on, a subsystem's error and repair counters are exported, at 0 until
// they count something.
func (m *Metrics) ObserveReconcile(subsystem string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.reconcileDuration.WithLabelValues(subsystem).Observe(d.Seconds())
	m.repairs.WithLabelValues(subsystem)
	c := m.reconcileErrors.WithLabelValues(subsystem)
	if err != nil {
		c.Inc()
	}
}

// Repaired counts one repair by subsystem: it found its kernel state (a
// table, map, WireGuard peer, route or bridge) changed behind its back and
// restored it. Use the subsystem names of ObserveReconcile.
func (m *Metrics) Repaired(subsystem string) {
	if m == nil {
		return
	}
	m.repairs.WithLabelValues(subsystem).Inc()
}

// SubnetConflict counts a subnet conflict this node lost.
func (m *Metrics) SubnetConflict() {
	if m == nil {
		return
	}
	m.subnetConflicts.Inc()
}

// StoreSyncLag records how long a remote write took to arrive (negative
// values, from clock skew, count as 0).
func (m *Metrics) StoreSyncLag(d time.Duration) {
	if m == nil {
		return
	}
	m.storeSyncLag.Observe(max(d, 0).Seconds())
}

// VIPConflict counts a service address conflict.
func (m *Metrics) VIPConflict() {
	if m == nil {
		return
	}
	m.vipConflicts.Inc()
}

// VIPFailover counts a VIP that moved to another node.
func (m *Metrics) VIPFailover() {
	if m == nil {
		return
	}
	m.vipFailovers.Inc()
}
