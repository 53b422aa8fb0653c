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

	"github.com/netloom/netloom/kube/devapi"
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
			&cli.BoolFlag{Name: "kubernetes", Usage: "run a real Kubernetes API server (etcd, kube-apiserver, kube-controller-manager; built from the Go module proxy on first use) and the agents in Kubernetes mode"},
			&cli.IntFlag{Name: "api-port", Value: 6443, Usage: "with --kubernetes: host port (on 127.0.0.1) of the API server"},
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
			var bins devapi.Binaries
			if c.Bool("kubernetes") {
				if bins, err = devapi.Build(ctx, devapi.Options{Progress: func(s string) { fmt.Println(s) }}); err != nil {
					return err
				}
			}
			cl, err := demo.Build(ctx, demo.Options{
				Nodes: c.Int("nodes"), PodsPerNode: c.Int("pods"), Exe: exe, DisplayExe: os.Args[0],
				StateDir: c.String("state-dir"), WireGuard: c.String("wireguard"), Log: log, Stdout: os.Stdout,
			})
			if err != nil {
				return err
			}
			var kd *kubeDemo
			down := func() error {
				var errs []error
				if kd != nil {
					errs = append(errs, kd.stop())
				}
				return errors.Join(append(errs, cl.Down())...)
			}
			up := func() error {
				if c.Bool("kubernetes") {
					var err error
					if kd, err = startKubeDemo(ctx, cl, bins, c.Int("api-port")); err != nil {
						return err
					}
				}
				if err := cl.StartAgents(ctx); err != nil {
					return err
				}
				if err := cl.WaitReady(ctx, 60*time.Second); err != nil {
					return err
				}
				if kd != nil {
					return kd.addPods(ctx, cl)
				}
				return cl.AddPods(ctx)
			}
			if err := up(); err != nil {
				return errors.Join(err, down())
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
			if kd != nil {
				fmt.Print(kd.describe())
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
					return down()
				case <-tick.C:
					if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
						fmt.Println("the demo cluster was removed by 'netloom demo --down'")
						if kd != nil {
							return kd.stop()
						}
						return nil
					}
				}
			}
		},
	}
}
