package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netloom/netloom/node"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/demo"
)

// slowClients is how many connections TestSlowClients holds open on
// node1's API socket and dashboard.
const slowClients = 300

// TestSlowClients: while hundreds of clients hold connections to node1's
// local API socket and its dashboard without finishing their requests
// (headers cut off, a body that never comes), and a client sends a request
// over the size limit, the agent keeps working: the oversized apply is
// refused at once with one line and stores nothing, an apply and a CNI ADD
// through the same socket succeed, and a service applied on node1 is
// programmed on both nodes and answers a pod of node2. The connections cut
// off in their headers are closed by the agent.
func TestSlowClients(t *testing.T) {
	needRoot(t)
	t.Parallel()
	x := newCluster(t, demo.Options{Nodes: 2, PodsPerNode: 1, ExtraAgentArgs: fastTimers})
	x.start()
	n1 := x.node(1)
	pods := x.c.Pods()
	x.startServers(pods)

	var headersCut []net.Conn
	var all []net.Conn
	t.Cleanup(func() {
		for _, c := range all {
			c.Close()
		}
	})
	for i := range slowClients {
		var c net.Conn
		var err error
		if i%3 == 2 {
			c, err = demo.DialInNetns(n1.NS, "tcp", demo.NodeUIAddr, 5*time.Second)
		} else {
			c, err = net.DialTimeout("unix", n1.Socket, 5*time.Second)
		}
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		all = append(all, c)
		switch i % 3 {
		case 0: // API: the headers never end
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: netloom\r\n", api.PathApply)
			headersCut = append(headersCut, c)
		case 1: // API: the body never comes
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: netloom\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"manifest\":\"", api.PathApply)
		case 2: // dashboard: the headers never end
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: netloom\r\n")
			headersCut = append(headersCut, c)
		}
	}
	t.Logf("%d connections held open on %s's API socket and dashboard", len(all), n1.Name)

	big := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: too-big\n# " + strings.Repeat("x", node.MaxRequestBytes) + "\n"
	r := x.cli(n1, []byte(big), "apply", "-f", "-")
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.err == nil || len(lines) != 1 || !strings.Contains(r.stderr, "split the manifest") {
		t.Errorf("an apply over %d MiB: want one line saying to split the manifest, got %v", node.MaxRequestBytes>>20, r)
	}
	if items, err := x.getList(n1, "namespaces"); err != nil {
		t.Fatal(err)
	} else if find(items, "", "too-big") != nil {
		t.Error("the refused apply stored its namespace")
	}

	x.mustApply(n1, podsManifest(pods, nil)+svcManifest(svcSpec{name: "web", typ: "ClusterIP"}))
	var cip netip.Addr
	eventually(t, 30*time.Second, "service web has a ClusterIP on both nodes", func() error {
		for _, n := range x.c.Nodes {
			svcs, err := x.services(n)
			if err != nil {
				return err
			}
			if !svcs["web"].clusterIP.IsValid() {
				return fmt.Errorf("%s: web has no ClusterIP yet", n.Name)
			}
			cip = svcs["web"].clusterIP
		}
		return nil
	})
	from := x.pod(2, 1)
	eventually(t, 30*time.Second, "a pod of node2 reaches web's ClusterIP", func() error {
		_, err := askTCP(from.NS, netip.AddrPortFrom(cip, 80), 2*time.Second)
		return err
	})
	if _, err := x.c.AddPod(context.Background(), n1, "late"); err != nil {
		t.Errorf("CNI ADD on %s with the slow clients connected: %v", n1.Name, err)
	}
	if _, err := x.c.Status(t.Context(), n1); err != nil {
		t.Errorf("status of %s: %v", n1.Name, err)
	}

	// Clients cut off in their headers are dropped by the agent (5 s
	// header timeout).
	for i, c := range headersCut {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("connection %d cut off in its headers is still open after 30 s: %v", i, err)
		}
	}
}
