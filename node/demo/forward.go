package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// DefaultDashboardPort is the host port `netloom demo` serves node1's
// dashboard on, or the next free one.
const DefaultDashboardPort = 7947

// NodeUIAddr is where every demo agent serves its dashboard, inside its own
// network namespace (the agent's default --ui-addr).
const NodeUIAddr = "127.0.0.1:7947"

// Forwarder accepts TCP connections on the host (in the network namespace
// of the process that runs it) and relays each to an address inside a node's
// namespace. It creates no link, route or firewall rule anywhere: the
// connection to the node is a socket made inside the node's namespace.
type Forwarder struct {
	ln     net.Listener
	ns     string // target network namespace
	target string // host:port inside ns

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Forward listens on listen (host:port in this process's namespace; port 0
// picks a free one) for connections to target inside node n's namespace.
// Run serves it.
func (c *Cluster) Forward(n *Node, listen, target string) (*Forwarder, error) {
	if !netnsExists(n.NS) {
		return nil, fmt.Errorf("forward to node %s: network namespace %s does not exist", n.Name, n.NS)
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("forward to node %s: target %q: %w", n.Name, target, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forward to node %s: listen on %s: %w", n.Name, listen, err)
	}
	return &Forwarder{ln: ln, ns: n.NS, target: target, conns: map[net.Conn]struct{}{}}, nil
}

// ForwardDashboard forwards the host's 127.0.0.1:port to node n's dashboard
// (127.0.0.1:7947 in its namespace). Port 0 means 7947 or, when that is
// taken, the next free port above it. Describe then prints its address.
func (c *Cluster) ForwardDashboard(n *Node, port int) (*Forwarder, error) {
	var f *Forwarder
	var err error
	if port != 0 {
		f, err = c.Forward(n, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), NodeUIAddr)
	} else {
		for p := DefaultDashboardPort; p < DefaultDashboardPort+50; p++ {
			if f, err = c.Forward(n, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), NodeUIAddr); err == nil {
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("serve the dashboard of node %s on the host: %w", n.Name, err)
	}
	c.mu.Lock()
	c.dashboard = f.URL()
	c.dashboardNode = n.Name
	c.mu.Unlock()
	return f, nil
}

// Addr is the host address the forwarder listens on.
func (f *Forwarder) Addr() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(f.ln.Addr().String())
	return ap
}

// URL is http://ADDR/ of the forwarder.
func (f *Forwarder) URL() string { return "http://" + f.Addr().String() + "/" }

// Run relays connections until ctx ends or Close is called; then it closes
// the listener and every open connection.
func (f *Forwarder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			f.wg.Wait()
			if closed {
				return nil
			}
			return fmt.Errorf("forward to %s in netns %s: %w", f.target, f.ns, err)
		}
		if !f.track(conn) {
			conn.Close()
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(conn)
			f.relay(conn)
		}()
	}
}

// Close stops the forwarder and its connections.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	return f.ln.Close()
}

func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forwarder) relay(client net.Conn) {
	server, err := DialInNetns(f.ns, "tcp", f.target, 5*time.Second)
	if err != nil {
		return
	}
	if !f.track(server) {
		server.Close()
		return
	}
	defer f.untrack(server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// DialInNetns connects to address from inside the named network namespace:
// the socket is created on an OS thread switched into that namespace (Do),
// and stays there.
func DialInNetns(ns, network, address string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout(network, address, timeout)
		return err
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("dial %s in netns %s: %w", address, ns, err)
	}
	return conn, nil
}
