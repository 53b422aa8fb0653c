package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// listenInNetns opens a TCP listener inside the named namespace.
func listenInNetns(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return // the thread stays locked and is thrown away
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- result{err: err}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := netns.Set(orig); err != nil {
			ch <- result{err: errors.Join(lerr, err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ln, lerr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen on %s in netns %s: %v", addr, ns, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// echo answers every line with "<ns>: <line>".
func echo(ln net.Listener, tag string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s: %s\n", tag, sc.Text())
			}
		}()
	}
}

func TestForwarderReachesNodeNamespace(t *testing.T) {
	needRoot(t)
	before := rootLinks(t)
	c := testBuild(t, Options{Nodes: 1})
	n := c.Nodes[0]

	// A server on the node's loopback, unreachable from the host directly.
	ln := listenInNetns(t, n.NS, "127.0.0.1:0")
	go echo(ln, "inside")
	target := ln.Addr().String()

	f, err := c.Forward(n, "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	// Several connections at once, each relayed both ways.
	var conns []net.Conn
	for i := range 3 {
		conn, err := net.DialTimeout("tcp", f.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "hello %d\n", i)
	}
	for i, conn := range conns {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != fmt.Sprintf("inside: hello %d\n", i) {
			t.Errorf("connection %d answered %q, %v", i, line, err)
		}
	}
	// Half-close travels through: the server sees EOF and closes, so do we.
	tc := conns[0].(*net.TCPConn)
	tc.CloseWrite()
	if rest, err := io.ReadAll(tc); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: %q, %v", rest, err)
	}

	// Close ends Run and the open connections.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	conns[1].SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[1].Read(make([]byte, 1)); err == nil {
		t.Error("a relayed connection stayed open after the forwarder closed")
	}
	if _, err := net.DialTimeout("tcp", f.Addr().String(), time.Second); err == nil {
		t.Error("the forwarder still accepts after it closed")
	}

	// A target nobody listens on: the client is simply closed.
	f2, err := c.Forward(n, "127.0.0.1:0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	go f2.Run(context.Background())
	conn, err := net.DialTimeout("tcp", f2.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Errorf("connection to a closed port: %q, %v", b, err)
	}

	if after := rootLinks(t); !slices.Equal(before, after) {
		t.Errorf("root namespace links changed: before %v, after %v", before, after)
	}
}

func TestForwardDashboardInDescribe(t *testing.T) {
	needRoot(t)
	c := testBuild(t, Options{Nodes: 1})
	var b bytes.Buffer
	if err := c.Describe(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "Dashboard:") {
		t.Errorf("Describe shows a dashboard before one is forwarded:\n%s", b.String())
	}
	f, err := c.ForwardDashboard(c.Nodes[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := f.Addr().Port(); p < DefaultDashboardPort || p >= DefaultDashboardPort+50 || !f.Addr().Addr().IsLoopback() {
		t.Errorf("dashboard forwarder on %s, want 127.0.0.1:%d or a port above", f.Addr(), DefaultDashboardPort)
	}
	b.Reset()
	if err := c.Describe(&b); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Dashboard: http://%s/ (node1)", f.Addr())
	if !strings.Contains(b.String(), want) {
		t.Errorf("Describe lacks %q:\n%s", want, b.String())
	}
	// A second one takes the next free port.
	g, err := c.ForwardDashboard(c.Nodes[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Addr() == f.Addr() {
		t.Errorf("two forwarders on %s", g.Addr())
	}
	if _, err := c.ForwardDashboard(c.Nodes[0], int(g.Addr().Port())); err == nil {
		t.Error("ForwardDashboard on a port in use succeeded")
	}
}
