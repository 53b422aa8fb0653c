package devapi

import (
	"context"
	"fmt"
	"net"

	"github.com/netloom/netloom/node/demo"
)

// inNetns runs f inside the named network namespace (demo.Do), or right
// here when ns is empty.
func inNetns(ns string, f func() error) error {
	if ns == "" {
		return f()
	}
	return demo.Do(ns, f)
}

// dialer returns a DialContext that connects from inside ns.
func dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 in ns.
func freePorts(ns string, n int) ([]int, error) {
	var ports []int
	err := inNetns(ns, func() error {
		for range n {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer ln.Close() // held until all are chosen, so they differ
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pick free ports: %w", err)
	}
	return ports, nil
}
