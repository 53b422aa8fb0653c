package main

import (
	"fmt"

	"github.com/netloom/netloom/kube/manifests"
	"github.com/urfave/cli/v2"
)

func k8sCommand() *cli.Command {
	return &cli.Command{
		Name:  "k8s",
		Usage: "Kubernetes mode: what a cluster admin applies once, and the agents' kubeconfig",
		Subcommands: []*cli.Command{
			{
				Name:  "manifests",
				Usage: "print the AddressPool CRD and the ServiceAccount, ClusterRole and ClusterRoleBinding the agents use",
				Description: "Prints one YAML stream to apply once per cluster, as cluster admin:\n\n" +
					"   netloom k8s manifests | kubectl apply -f -\n\n" +
					"It holds the CustomResourceDefinition " + manifests.AddressPoolCRDName + " (cluster\n" +
					"scoped) and the ServiceAccount " + manifests.ServiceAccountNamespace + "/" + manifests.ServiceAccountName + ", with a ClusterRole that\n" +
					"reads pods, namespaces, services, endpointslices, networkpolicies, nodes,\n" +
					"servicecidrs and addresspools, patches services/status and\n" +
					"nodes/status, and records events. The CRD's validation rules need\n" +
					"Kubernetes 1.31 or newer. 'netloom k8s kubeconfig' says how to make the\n" +
					"agents' kubeconfig.",
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return fmt.Errorf("k8s manifests: takes no arguments, got %q", c.Args().First())
					}
					b, err := manifests.YAML()
					if err != nil {
						return err
					}
					_, err = c.App.Writer.Write(b)
					return err
				},
			},
			{
				Name:  "kubeconfig",
				Usage: "print how to make the kubeconfig the agents use (" + manifests.KubeconfigPath + ")",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "server", Usage: "the API server's URL as the hosts reach it (default: read from your kubeconfig)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return fmt.Errorf("k8s kubeconfig: takes no arguments, got %q (the URL goes in --server)", c.Args().First())
					}
					_, err := fmt.Fprint(c.App.Writer, manifests.KubeconfigHowTo(c.String("server")))
					return err
				},
			},
		},
	}
}
