package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/netloom/netloom/kube"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/systemd"
)

// KubeFile keeps, in Kubernetes mode, the objects of the last synced
// view of the API server, for a start while it is down.
const KubeFile = "kubernetes.json"

// podWait bounds how long CNI ADD waits for a pod to reach netloom from
// the API server before it fails (the kubelet retries).
const podWait = 10 * time.Second

// openKube reads the kubeconfig and makes the Kubernetes source and
// writer. Only a kubeconfig that does not load stops the start: an API
// server that is down or refuses netloom is reported and retried, while
// the saved view (if any) keeps the data plane.
func (a *Agent) openKube(st *store.Store) (*kube.Source, error) {
	c := a.cfg
	cl, err := kube.Connect(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	src, err := kube.New(kube.Config{Node: c.Name, Proxy: c.proxyMode, Store: st, StateFile: filepath.Join(c.DataDir, KubeFile),
		ClusterCIDR: c.cidr, Server: cl.Server, Log: a.log}, cl.Kube)
	if err != nil {
		return nil, err
	}
	a.kube, a.kubeClients = src, cl
	a.kubeWriter = &kube.Writer{Client: cl.Kube, Server: cl.Server, Node: c.Name, Service: src.Service}
	a.log.Info("Kubernetes mode", "server", cl.Server, "kubeconfig", c.Kubeconfig, "serviceProxy", c.proxyMode)
	return src, nil
}

// runKube checks netloom's permissions until they are all there, then
// probes the API server every probeEvery; it keeps this node's Node
// object up to date (subnet, WireGuard key and endpoint, the
// NetworkUnavailable condition once the routes are up) and records an
// event when this node starts announcing a VIP.
func (a *Agent) runKube(ctx context.Context) error {
	const probeEvery = 10 * time.Second
	cl := a.kubeClients
	var (
		access     bool
		lastErr    string
		lastProbe  time.Time
		patched    kube.NodeState
		patchedOK  bool
		patchErr   string
		announcing = map[netip.Addr]bool{}
	)
	// Until its first answer the agent cannot know whether the server was
	// down: both may be starting together (a host booting, or the agent
	// started while the server was away and the server back a moment
	// later), and a refusal then is the server's start. A missing
	// ClusterRole still shows as an error, WarmupGrace later.
	var warm kube.Warmup
	warm.Unreachable(time.Now())
	report := func(err error, prev *string, msg string) {
		if err == nil {
			*prev = ""
			return
		}
		// A watch may have seen the server go away between two probes.
		warm.Unreachable(a.kube.Status().LastUnreachable)
		if warm.Starting(err, time.Now()) {
			// Not the ClusterRole's fault: the server is still loading it.
			if *prev != "starting" {
				a.log.Warn(msg+": the API server refused it right after it (or this agent) started, as it does until its authorization caches have loaded; retrying", "err", err)
			}
			*prev = "starting"
			return
		}
		if err.Error() != *prev {
			a.log.Error(msg, "err", err)
		}
		*prev = err.Error()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if time.Since(lastProbe) >= probeEvery {
			lastProbe = time.Now()
			var err error
			if !access {
				err = kube.CheckAccess(ctx, cl.Kube, cl.Server, kube.Needed())
				access = err == nil
			} else {
				vctx, cancel := context.WithTimeout(ctx, probeEvery)
				if _, perr := cl.Kube.Version(vctx); perr != nil {
					err = kube.APIError(cl.Server, perr)
				}
				cancel()
			}
			if ctx.Err() != nil {
				return nil
			}
			a.kube.Contacted(err)
			report(err, &lastErr, "Kubernetes API server")
		}
		st := kube.NodeState{Subnet: a.hub.Local().Subnet, PublicKey: a.pubKey,
			Endpoint: netip.AddrPortFrom(a.cfg.advertise, uint16(a.cfg.WGPort)), NetworkReady: a.ready.Load()}
		if !patchedOK || st != patched {
			err := a.kubeWriter.PatchNode(ctx, st)
			if ctx.Err() != nil {
				return nil
			}
			report(err, &patchErr, "write this node's state on its Node object")
			patched, patchedOK = st, err == nil
		}
		a.announceEvents(announcing)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// announceEvents records an event on each service whose VIP this node
// started announcing since the last call (only the owner writes: one
// event per move).
func (a *Agent) announceEvents(announcing map[netip.Addr]bool) {
	s := a.lbc.Status().Snapshot
	if s == nil || s.LB == nil {
		return
	}
	now := map[netip.Addr]lb.ServiceKey{}
	for _, svc := range s.Services {
		r := s.LB.Plan.Results[svc.Key()]
		if r.VIP.IsValid() && s.LB.Owners[r.VIP] == a.cfg.Name {
			now[r.VIP] = svc.Key()
		}
	}
	for vip, k := range now {
		if announcing[vip] {
			continue
		}
		msg := fmt.Sprintf("node %s announces %s (ARP)", a.cfg.Name, vip)
		if err := a.kubeWriter.Event(k, "VIPAnnounced", msg); err != nil {
			a.log.Warn("record event", "service", k, "err", err)
			continue
		}
		announcing[vip] = true
	}
	for vip := range announcing {
		if _, ok := now[vip]; !ok {
			delete(announcing, vip)
		}
	}
}

// writeConflist writes the CNI conflist (--cni-conflist) once the pod
// network is up: a kubelet sees the node's network ready only then.
func (a *Agent) writeConflist() error {
	p := a.cfg.CNIConflist
	if p == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(p, systemd.Conflist(systemd.InstallOptions{Socket: a.cfg.Socket}), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	a.log.Info("CNI conflist written", "path", p)
	return nil
}
