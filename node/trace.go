package node

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/netloom/netloom/firewall/policy"
	"github.com/netloom/netloom/node/api"
)

// handleTrace answers `netloom policy trace`: the verdict for the first
// packet of a connection, computed by running the compiled tables of the
// nodes it crosses.
func (a *Agent) handleTrace(w http.ResponseWriter, r *http.Request) {
	var req api.TraceRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	snap := a.policySnapshot()
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
