package metrics

import (
	"math"
	"time"

	"github.com/netloom/netloom/node/api"
	"github.com/prometheus/client_golang/prometheus"
)

// memberStates are always exported, at 0 when no member is in them, so
// that alerts on them need no absent().
var memberStates = []string{"alive", "suspect", "dead", "left"}

// family is one metric family computed from a Source at scrape time. To add
// one (VIPs owned, policy rules, ...), add its Desc and a collect function to
// newCollector.
type family struct {
	desc    *prometheus.Desc
	collect func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric)
}

// view is what one scrape read from the Source.
type view struct {
	status  api.Status
	objects map[string][]api.Object // kinds the source knows
	now     time.Time
}

// collector reads the Source on every scrape.
type collector struct {
	src      Source
	now      func() time.Time
	families []family
}

func newCollector(src Source) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &collector{src: src, now: time.Now}
	c.families = []family{
		{d("netloom_info", "This node: name, version, WireGuard mode and pod subnet (value 1).", "node", "version", "wireguard_mode", "subnet"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				n := v.status.Node
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, 1, n.Name, n.Version, n.WireGuard.Mode, n.Subnet)
			}},
		{d("netloom_members", "Cluster members this node knows, by state (alive, suspect, dead, left); includes this node.", "state"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				count := map[string]int{}
				for _, s := range memberStates {
					count[s] = 0
				}
				for _, m := range v.status.Members {
					count[m.State]++
				}
				for s, n := range count {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n), s)
				}
			}},
		{d("netloom_wireguard_peers", "WireGuard peers configured on this node's device."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				n := 0
				for _, m := range v.status.Members {
					if isPeer(m) {
						n++
					}
				}
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n))
			}},
		{d("netloom_wireguard_peer_last_handshake_age_seconds", "Seconds since the last WireGuard handshake with a peer; +Inf when there was none yet.", "peer"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				for _, m := range v.status.Members {
					if !isPeer(m) {
						continue
					}
					age := math.Inf(1)
					if hs := m.WireGuard.LastHandshake; hs != nil {
						age = max(v.now.Sub(*hs).Seconds(), 0)
					}
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, age, m.Name)
				}
			}},
		{d("netloom_wireguard_peer_rx_bytes_total", "Bytes received from a WireGuard peer (since the device started).", "peer"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				for _, m := range v.status.Members {
					if isPeer(m) {
						ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(m.WireGuard.RxBytes), m.Name)
					}
				}
			}},
		{d("netloom_wireguard_peer_tx_bytes_total", "Bytes sent to a WireGuard peer (since the device started).", "peer"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				for _, m := range v.status.Members {
					if isPeer(m) {
						ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(m.WireGuard.TxBytes), m.Name)
					}
				}
			}},
		{d("netloom_store_objects", "Objects in the replicated store, by kind.", "kind"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				for _, k := range Kinds {
					if list, ok := v.objects[k]; ok {
						ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(len(list)), k)
					}
				}
			}},
		{d("netloom_vips_owned", "LoadBalancer VIPs this node announces."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				n := 0
				for _, vip := range v.status.VIPs {
					if vip.Owner == v.status.Node.Name {
						n++
					}
				}
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n))
			}},
		{d("netloom_vips", "LoadBalancer VIPs of the cluster, by whether a node announces them.", "announced"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				yes, no := 0, 0
				for _, vip := range v.status.VIPs {
					if vip.Owner != "" {
						yes++
					} else {
						no++
					}
				}
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(yes), "true")
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(no), "false")
			}},
		{d("netloom_kubernetes_last_contact_timestamp_seconds", "Kubernetes mode: when the API server last answered (a watch event or a probe), unix time; absent in standalone mode."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				if k := v.status.Node.Kubernetes; k != nil && k.LastContact != nil {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(k.LastContact.UnixMilli())/1000)
				}
			}},
		{d("netloom_kubernetes_synced", "Kubernetes mode: 1 once the API caches synced since the start, else 0."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				if k := v.status.Node.Kubernetes; k != nil {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, b2f(k.Synced))
				}
			}},
		{d("netloom_kubernetes_error", "Kubernetes mode: 1 while the last watch or probe of the API server failed (the error is in status), else 0."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				if k := v.status.Node.Kubernetes; k != nil {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, b2f(k.LastError != ""))
				}
			}},
		{d("netloom_policy_rules", "nftables rules this node's NetworkPolicy compiled to."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v.status.Node.PolicyRules))
			}},
		{d("netloom_policy_packets_total", "First packets of connections a NetworkPolicy allowed, and packets dropped for pods it isolates, on this node.", "policy", "direction", "verdict"),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				for _, o := range v.objects["NetworkPolicy"] {
					if o.Counters == nil {
						continue
					}
					key := o.Namespace + "/" + o.Name
					for dir, c := range map[string]api.PolicyCounts{"ingress": o.Counters.Ingress, "egress": o.Counters.Egress} {
						ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(c.AllowedPackets), key, dir, "allowed")
						ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(c.DroppedPackets), key, dir, "dropped")
					}
				}
			}},
		{d("netloom_pods", "Pods attached on this node."),
			func(v *view, desc *prometheus.Desc, ch chan<- prometheus.Metric) {
				n := 0
				for _, p := range v.objects["Pod"] {
					if p.Node == v.status.Node.Name {
						n++
					}
				}
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n))
			}},
	}
	return c
}

// isPeer tells a member that is a WireGuard peer of this node: not itself,
// and on the device (the status has an endpoint only for those).
func isPeer(m api.MemberStatus) bool {
	return !m.Self && m.WireGuard.Endpoint != "" && (m.State == "alive" || m.State == "suspect")
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.families {
		ch <- f.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := &view{status: c.src.Status(), objects: map[string][]api.Object{}, now: c.now()}
	for _, k := range Kinds {
		if list := c.src.Objects(k); list != nil {
			v.objects[k] = list
		}
	}
	for _, f := range c.families {
		f.collect(v, f.desc, ch)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
