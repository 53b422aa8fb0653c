package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/netloom/netloom/node/api"
	"github.com/urfave/cli/v2"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "NetworkPolicy tools",
		Subcommands: []*cli.Command{{
			Name:      "trace",
			Usage:     "say whether a connection is allowed, and which policy and rule decide it",
			ArgsUsage: "SRC DST PORT/PROTO (SRC and DST: namespace/pod or an address; e.g. x/a y/b 80/tcp)",
			Flags:     []cli.Flag{socketFlag, outputFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 3 {
					return errors.New("policy trace: give SRC DST PORT/PROTO, e.g. netloom policy trace x/a y/b 80/tcp")
				}
				req := api.TraceRequest{Src: c.Args().Get(0), Dst: c.Args().Get(1), Port: c.Args().Get(2)}
				var resp api.TraceResponse
				if err := client(c).Do(c.Context, "POST", api.PathTrace, req, &resp); err != nil {
					return err
				}
				switch c.String("output") {
				case "json":
					return printJSON(os.Stdout, resp)
				case "yaml":
					return printYAML(os.Stdout, resp)
				case "":
				default:
					return fmt.Errorf("--output %q: use json or yaml", c.String("output"))
				}
				verdict := "ALLOWED"
				if !resp.Allowed {
					verdict = "DENIED"
				}
				fmt.Printf("%s  %s\n", verdict, resp.Reason)
				for _, d := range resp.Directions {
					switch {
					case !d.Isolated:
						fmt.Printf("  %-7s not isolated (no policy selects the pod for %s)\n", d.Direction, d.Direction)
					case d.Allowed:
						fmt.Printf("  %-7s allowed by %s rule %d (policies: %s)\n", d.Direction, d.Policy, d.Rule, strings.Join(d.Policies, ", "))
					default:
						fmt.Printf("  %-7s denied: no rule of %s allows it\n", d.Direction, strings.Join(d.Policies, ", "))
					}
				}
				for _, h := range resp.Hops {
					fmt.Printf("  on %s:\n", h.Node)
					for _, s := range h.Steps {
						fmt.Printf("    %s\n", s)
					}
				}
				return nil
			},
		}},
	}
}
