package node

import (
	"net/netip"
	"sort"
	"time"

	"github.com/netloom/netloom/kube"

	"github.com/netloom/netloom/lb/lbctl"
	"github.com/netloom/netloom/node/api"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Status is this node's view of itself and the cluster, built from the
// newest snapshot and the rooms' published status: it takes no lock of the
// agent's.
func (a *Agent) Status() api.Status {
	s := a.hub.Latest()
	st := api.Status{Node: api.NodeStatus{
		Name: a.cfg.Name, Address: a.cfg.advertise.String(), SubnetErr: s.Node.SubnetErr, Version: Version,
		WireGuard: api.LocalWireGuard{Mode: a.dev.Mode(), Interface: a.cfg.WGIface, PublicKey: a.pubKey, Port: a.cfg.WGPort},
	}}
	if s.Node.Subnet.IsValid() {
		st.Node.Subnet = s.Node.Subnet.String()
		st.Node.SubnetAssigned = s.NodeSubnet.Assigned.Masked() == s.Node.Subnet
	}
	st.Node.SubnetWaiting = s.Node.SubnetWaiting
	if pol := a.fwc.Status().Policy; pol != nil {
		for _, ch := range pol.Model.Chains {
			st.Node.PolicyRules += len(ch.Rules)
		}
	}
	if a.kube != nil {
		st.Node.Kubernetes = kubeStatus(a.kube.Status())
	}
	lbs := a.lbc.Status()
	st.VIPs = vipStatus(lbs)
	st.ServiceIssues = serviceIssues(lbs)
	stats, _ := a.dev.Stats()
	st.Members = []api.MemberStatus{}
	for _, m := range s.Members {
		ms := api.MemberStatus{Name: m.Name, Address: m.Addr.String(), State: m.State, Self: m.Self}
		if p, ok := s.Subnets.ByNode[m.Name]; ok {
			ms.Subnet = p.String()
		}
		ms.WireGuard.PublicKey = m.Meta.WGKey
		if m.Self {
			ms.WireGuard.Endpoint = netip.AddrPortFrom(a.cfg.advertise, uint16(a.cfg.WGPort)).String()
		} else if k, err := wgtypes.ParseKey(m.Meta.WGKey); err == nil {
			if ps, ok := stats[k]; ok {
				if ps.Endpoint.IsValid() {
					ms.WireGuard.Endpoint = ps.Endpoint.String()
				}
				if !ps.LastHandshake.IsZero() {
					t := ps.LastHandshake.UTC()
					ms.WireGuard.LastHandshake = &t
				}
				ms.WireGuard.RxBytes, ms.WireGuard.TxBytes = ps.RxBytes, ps.TxBytes
			}
		}
		st.Members = append(st.Members, ms)
	}
	return st
}

// vipStatus lists the VIPs of the cluster for status.
func vipStatus(lbs *lbctl.Status) []api.VIPStatus {
	out := []api.VIPStatus{}
	s := lbs.Snapshot
	if s == nil || s.LB == nil {
		return out
	}
	for _, svc := range s.Services {
		r := s.LB.Plan.Results[svc.Key()]
		if !r.VIP.IsValid() {
			continue
		}
		out = append(out, api.VIPStatus{IP: r.VIP.String(), Service: svc.Key().String(), Owner: s.LB.Owners[r.VIP], Recorded: svc.Assigned.VIP == r.VIP})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// serviceIssues lists the services that are pending or lost an address
// they asked for or held (in the last lbctl.ConflictMemory), for status.
func serviceIssues(lbs *lbctl.Status) []api.ServiceIssue {
	out := []api.ServiceIssue{}
	s := lbs.Snapshot
	if s == nil || s.LB == nil {
		return out
	}
	for _, svc := range s.Services {
		r := s.LB.Plan.Results[svc.Key()]
		c, lost := lbs.Conflicts[svc.Key()]
		if r.Pending == "" && !lost {
			continue
		}
		is := api.ServiceIssue{Service: svc.Key().String(), Pending: r.Pending}
		if lost {
			is.Conflict = c.Text
			at := c.At.UTC()
			is.ConflictAt = &at
		}
		out = append(out, is)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// kubeStatus is the Kubernetes part of status.
func kubeStatus(ks kube.Status) *api.KubernetesStatus {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	return &api.KubernetesStatus{Server: ks.Server, Synced: ks.Synced, FromSaved: ks.FromSaved, SyncedAt: at(ks.SyncedAt),
		LastContact: at(ks.LastContact), LastError: ks.LastError, LastErrorAt: at(ks.LastErrorAt)}
}
