package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/netloom/netloom/node/demo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "build a local cluster in network namespaces (3 nodes on one L2 segment, 2 pods each) and keep it up until Ctrl-C",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "down", Usage: "remove a demo cluster left running (by another 'netloom demo')"},
			&cli.IntFlag{Name: "nodes", Value: demo.DefaultNodes},
			&cli.IntFlag{Name: "pods", Value: demo.DefaultPodsPerNode, Usage: "pods per node"},
			&cli.StringFlag{Name: "state-dir", Value: demo.DefaultStateDir},
			&cli.StringFlag{Name: "wireguard", Value: "auto", Usage: "auto, kernel or userspace"},
			&cli.IntFlag{Name: "ui-port", Usage: "host port (on 127.0.0.1) of node1's dashboard; 0: 7947 or the next free one"},
		},
		Action: func(c *cli.Context) error {
			if os.Geteuid() != 0 {
				return errors.New("demo: run as root (it creates network namespaces)")
			}
			if c.Bool("down") {
				if err := demo.Down(c.String("state-dir")); err != nil {
					return err
				}
				fmt.Println("demo cluster removed")
				return nil
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			log, err := logger(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			cl, err := demo.Build(ctx, demo.Options{
				Nodes: c.Int("nodes"), PodsPerNode: c.Int("pods"), Exe: exe, DisplayExe: os.Args[0],
				StateDir: c.String("state-dir"), WireGuard: c.String("wireguard"), Log: log, Stdout: os.Stdout,
			})
			if err != nil {
				return err
			}
			up := func() error {
				if err := cl.StartAgents(ctx); err != nil {
					return err
				}
				if err := cl.WaitReady(ctx, 60*time.Second); err != nil {
					return err
				}
				return cl.AddPods(ctx)
			}
			if err := up(); err != nil {
				if derr := cl.Down(); derr != nil {
					err = errors.Join(err, derr)
				}
				return err
			}
			// node1's dashboard, reachable from the host through a forwarder
			// in this process (nothing is added to the host's network).
			if fwd, err := cl.ForwardDashboard(cl.Nodes[0], c.Int("ui-port")); err != nil {
				fmt.Fprintln(os.Stderr, "netloom demo: no dashboard on the host: "+err.Error())
			} else {
				defer fwd.Close()
				go fwd.Run(ctx)
			}
			if err := cl.Describe(os.Stdout); err != nil {
				return err
			}
			fmt.Println("\nthe demo runs until Ctrl-C (or 'netloom demo --down' from another shell)")
			// Stay up until Ctrl-C, or until 'demo --down' removed the cluster.
			state := filepath.Join(cl.Opts.StateDir, demo.StateFile)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					fmt.Println("removing the demo cluster")
					return cl.Down()
				case <-tick.C:
					if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
						fmt.Println("the demo cluster was removed by 'netloom demo --down'")
						return nil
					}
				}
			}
		},
	}
}
