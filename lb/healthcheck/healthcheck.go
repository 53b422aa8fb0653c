// Package healthcheck serves the health-check node ports of LoadBalancer
// services with externalTrafficPolicy Local, in the shape kube-proxy
// serves them, so that an external load balancer that probes
// healthCheckNodePort sends traffic only to nodes with local endpoints:
//
//	GET http://<node>:<healthCheckNodePort>/
//	200 {"service":{"namespace":"shop","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}
//	503 the same with "localEndpoints":0, or when the proxy is not healthy
//
// Desired is pure (which ports, which counts, from a snapshot); Server
// opens and closes one listener per port; Controller is the room's
// cluster.Controller.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
)

// Status is what one health-check port answers.
type Status struct {
	Service lb.ServiceKey
	// LocalEndpoints counts the service's Ready endpoints on this node.
	// Terminating ones do not count, so that the load balancer drains a
	// node whose pods are shutting down.
	LocalEndpoints int
}

// Desired returns the health-check ports this node serves for the
// snapshot: one per proxied LoadBalancer service with externalTrafficPolicy
// Local that has a health-check port allocated.
func Desired(node string, s *cluster.Snapshot) map[uint16]Status {
	out := map[uint16]Status{}
	if s == nil || s.LB == nil {
		return out
	}
	for _, svc := range s.Services {
		if !svc.Proxied() || svc.ProxyElsewhere || !svc.NeedsHealthCheck() {
			continue
		}
		r := s.LB.Plan.Results[svc.Key()]
		if r.HealthCheckNodePort == 0 {
			continue
		}
		st := Status{Service: svc.Key()}
		for _, ep := range s.LB.Endpoints[svc.Key()] {
			if ep.Node == node && ep.Ready && ep.IP.IsValid() {
				st.LocalEndpoints++
			}
		}
		out[r.HealthCheckNodePort] = st
	}
	return out
}

// response is the body kube-proxy's health-check server sends.
type response struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// Server serves health-check ports.
type Server struct {
	// Healthy reports whether the service proxy's rules are in the kernel
	// and current; nil counts as healthy.
	Healthy func() bool
	// Listen opens a port's listener (default: TCP on every address of the
	// node, as kube-proxy does).
	Listen func(port uint16) (net.Listener, error)

	mu    sync.Mutex
	ports map[uint16]*port
}

type port struct {
	srv    *http.Server
	status atomic.Pointer[Status]
}

func (s *Server) listen(p uint16) (net.Listener, error) {
	if s.Listen != nil {
		return s.Listen(p)
	}
	return net.Listen("tcp", ":"+strconv.Itoa(int(p)))
}

// Set makes want the served ports: new ports are opened, gone ones closed,
// the others answer with their new status at once. A port that cannot be
// opened is reported (one error per port, joined) and tried again on the
// next Set.
func (s *Server) Set(want map[uint16]Status) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ports == nil {
		s.ports = map[uint16]*port{}
	}
	var errs []error
	for p, pt := range s.ports {
		if _, ok := want[p]; !ok {
			_ = pt.srv.Close()
			delete(s.ports, p)
		}
	}
	keys := make([]uint16, 0, len(want))
	for p := range want {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	for _, p := range keys {
		st := want[p]
		if pt, ok := s.ports[p]; ok {
			pt.status.Store(&st)
			continue
		}
		ln, err := s.listen(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("health-check port %d of service %s: %w (another program holds it? free it or set spec.healthCheckNodePort)", p, st.Service, err))
			continue
		}
		pt := &port{}
		pt.status.Store(&st)
		pt.srv = &http.Server{Handler: s.handler(pt), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
		s.ports[p] = pt
		go func() { _ = pt.srv.Serve(ln) }()
	}
	return errors.Join(errs...)
}

// Ports lists the open ports, sorted.
func (s *Server) Ports() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint16, 0, len(s.ports))
	for p := range s.ports {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Close closes every port.
func (s *Server) Close() error {
	return s.Set(nil)
}

func (s *Server) handler(pt *port) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := pt.status.Load()
		var body response
		body.Service.Namespace, body.Service.Name = st.Service.Namespace, st.Service.Name
		body.LocalEndpoints = st.LocalEndpoints
		body.ServiceProxyHealthy = s.Healthy == nil || s.Healthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(st.LocalEndpoints))
		code := http.StatusOK
		if st.LocalEndpoints == 0 || !body.ServiceProxyHealthy {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// Controller is the health-check room.
type Controller struct {
	Node   string
	Server *Server
	Log    *slog.Logger
}

// Pass serves the ports of s.
func (c *Controller) Pass(_ context.Context, s *cluster.Snapshot, _ bool) (bool, error) {
	if s == nil || !s.Node.Joined || s.LB == nil {
		return false, nil
	}
	return true, c.Server.Set(Desired(c.Node, s))
}
