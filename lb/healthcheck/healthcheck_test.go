package healthcheck

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
)

func TestDesired(t *testing.T) {
	local := lb.Service{Namespace: "shop", Name: "web", Type: lb.TypeLoadBalancer, ExternalTrafficPolicy: lb.PolicyLocal}
	cluster_ := lb.Service{Namespace: "shop", Name: "api", Type: lb.TypeLoadBalancer, ExternalTrafficPolicy: lb.PolicyCluster}
	pending := lb.Service{Namespace: "shop", Name: "pending", Type: lb.TypeLoadBalancer, ExternalTrafficPolicy: lb.PolicyLocal}
	ep := func(node string, ready bool) lb.Endpoint {
		return lb.Endpoint{Node: node, IP: netip.MustParseAddr("10.244.1.2"), Ready: ready, Serving: true, Terminating: !ready}
	}
	s := &cluster.Snapshot{
		Services: []lb.Service{local, cluster_, pending},
		LB: &cluster.LB{
			Plan: lb.Plan{Results: map[lb.ServiceKey]lb.Result{
				local.Key():    {HealthCheckNodePort: 31000},
				cluster_.Key(): {},
				pending.Key():  {Pending: "node port range 30000-30000 is full"},
			}},
			Endpoints: map[lb.ServiceKey][]lb.Endpoint{
				local.Key(): {ep("n1", true), ep("n1", true), ep("n1", false), ep("n2", true)},
			},
		},
	}
	want := map[uint16]Status{31000: {Service: local.Key(), LocalEndpoints: 2}}
	if diff := cmp.Diff(want, Desired("n1", s)); diff != "" {
		t.Errorf("n1 (-want +got):\n%s", diff)
	}
	want = map[uint16]Status{31000: {Service: local.Key(), LocalEndpoints: 0}}
	if diff := cmp.Diff(want, Desired("n3", s)); diff != "" {
		t.Errorf("n3 (-want +got):\n%s", diff)
	}
}

// loopback serves each port on an ephemeral loopback port and remembers
// where.
type loopback map[uint16]string

func (l loopback) listen(p uint16) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		l[p] = ln.Addr().String()
	}
	return ln, err
}

func get(t *testing.T, addr string) (int, response) {
	t.Helper()
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer res.Body.Close()
	var body response
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return res.StatusCode, body
}

func TestServer(t *testing.T) {
	lo := loopback{}
	healthy := true
	s := &Server{Listen: lo.listen, Healthy: func() bool { return healthy }}
	t.Cleanup(func() { _ = s.Close() })
	web := lb.ServiceKey{Namespace: "shop", Name: "web"}
	if err := s.Set(map[uint16]Status{31000: {Service: web, LocalEndpoints: 2}, 31001: {Service: lb.ServiceKey{Namespace: "shop", Name: "db"}}}); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, lo[31000])
	if code != 200 || body.Service.Namespace != "shop" || body.Service.Name != "web" || body.LocalEndpoints != 2 || !body.ServiceProxyHealthy {
		t.Errorf("31000: %d %+v", code, body)
	}
	if code, body := get(t, lo[31001]); code != 503 || body.LocalEndpoints != 0 {
		t.Errorf("31001: %d %+v", code, body)
	}
	// A new count is served at once, on the same listener.
	if err := s.Set(map[uint16]Status{31000: {Service: web, LocalEndpoints: 0}}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, lo[31000]); code != 503 {
		t.Errorf("31000 without endpoints: %d", code)
	}
	if _, err := http.Get("http://" + lo[31001] + "/"); err == nil {
		t.Errorf("31001 still served after removal")
	}
	if diff := cmp.Diff([]uint16{31000}, s.Ports()); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	// An unhealthy proxy fails every check.
	if err := s.Set(map[uint16]Status{31000: {Service: web, LocalEndpoints: 1}}); err != nil {
		t.Fatal(err)
	}
	healthy = false
	if code, body := get(t, lo[31000]); code != 503 || body.ServiceProxyHealthy {
		t.Errorf("unhealthy: %d %+v", code, body)
	}
}

func TestServerPortBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	port := uint16(busy.Addr().(*net.TCPAddr).Port)
	s := &Server{Listen: func(p uint16) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:"+itoa(p)) }}
	t.Cleanup(func() { _ = s.Close() })
	err = s.Set(map[uint16]Status{port: {Service: lb.ServiceKey{Namespace: "shop", Name: "web"}}})
	if err == nil || !strings.Contains(err.Error(), "health-check port "+itoa(port)+" of service shop/web") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Set on a busy port: %v", err)
	}
	if len(s.Ports()) != 0 {
		t.Errorf("ports = %v", s.Ports())
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
