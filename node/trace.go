package node

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/node/api"
)

// handleTrace answers `netloom policy trace`: the verdict for the first
// packet of a connection, computed by running the compiled tables of the
// nodes it crosses.
func (a *Agent) handleTrace(w http.ResponseWriter, r *http.Request) {
	var req api.TraceRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	cs := a.hub.Latest()
	snap := cs.Policy
	src, err := resolveEndpoint(snap, req.Src, "source")
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	dst, err := resolveEndpoint(snap, req.Dst, "destination")
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	port, proto, err := parsePortProto(req.Port)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if resp, ok := ownNodeTrace(cs, src, dst); ok {
		writeJSON(w, resp)
		return
	}
	ct := policy.TraceCluster(snap, policy.Packet{Src: src, Dst: dst, Protocol: proto, Port: port}, policy.Options{LogDrops: a.cfg.PolicyLogDrops})
	resp := api.TraceResponse{Allowed: ct.Allowed, Reason: ct.Reason}
	for _, d := range []struct {
		name string
		t    policy.DirTrace
	}{{"egress", ct.Egress}, {"ingress", ct.Ingress}} {
		resp.Directions = append(resp.Directions, api.TraceDirection{
			Direction: d.name, Isolated: d.t.Isolated, Allowed: d.t.Allowed,
			Policies: d.t.Policies, Policy: d.t.Policy, Rule: d.t.Rule,
		})
	}
	for _, h := range ct.Hops {
		resp.Hops = append(resp.Hops, api.TraceHop{Node: h.Node, Allowed: h.Allowed, Steps: h.Steps})
	}
	writeJSON(w, resp)
}

// resolveEndpoint turns "namespace/name" (a pod) or an address into an
// address.
func resolveEndpoint(s *policy.Snapshot, v, what string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(v); err == nil {
		return a, nil
	}
	ns, name, ok := strings.Cut(v, "/")
	if !ok {
		ns, name = "default", v
	}
	for _, p := range s.Pods {
		if p.Namespace == ns && p.Name == name {
			return p.IP, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s %q is neither an address nor a pod with an address (give namespace/name of an attached pod)", what, v)
}

// parsePortProto reads "80", "80/tcp", "53/UDP", "sctp/9" is not accepted.
func parsePortProto(v string) (uint16, policy.Protocol, error) {
	num, proto, _ := strings.Cut(v, "/")
	if proto == "" {
		proto = "TCP"
	}
	p := policy.Protocol(strings.ToUpper(proto))
	switch p {
	case policy.TCP, policy.UDP, policy.SCTP:
	default:
		return 0, "", fmt.Errorf("protocol %q: use tcp, udp or sctp (e.g. 80/tcp)", proto)
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return 0, "", fmt.Errorf("port %q: give a number from 1 to 65535 and a protocol, e.g. 80/tcp", v)
	}
	return uint16(n), p, nil
}

// ownNodeTrace answers for traffic between a pod and an address of its own
// node: it goes through the node's input or output hook, not the forward
// hook where policy is enforced, so it always passes (health checks).
func ownNodeTrace(cs *cluster.Snapshot, src, dst netip.Addr) (api.TraceResponse, bool) {
	nodeOf := map[netip.Addr]string{}
	for _, m := range cs.Members {
		if addr, err := netip.ParseAddr(m.Meta.Addr); err == nil {
			nodeOf[addr] = m.Name
		}
		if sub, ok := cs.Subnets.ByNode[m.Name]; ok {
			nodeOf[ipam.Gateway(sub)] = m.Name
		}
	}
	podNode := map[netip.Addr]policy.Pod{}
	for _, p := range cs.Policy.Pods {
		podNode[p.IP] = p
	}
	if p, ok := podNode[dst]; ok && nodeOf[src] == p.Node {
		return api.TraceResponse{Allowed: true, Reason: fmt.Sprintf("allowed: %s is an address of %s's own node %s; traffic from a node to its pods is not filtered", src, p.Key(), p.Node)}, true
	}
	if p, ok := podNode[src]; ok && nodeOf[dst] == p.Node {
		return api.TraceResponse{Allowed: true, Reason: fmt.Sprintf("allowed: %s is an address of %s's own node %s; traffic from a pod to its node is not filtered", dst, p.Key(), p.Node)}, true
	}
	return api.TraceResponse{}, false
}
