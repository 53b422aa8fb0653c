package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/node/api"
	"github.com/urfave/cli/v2"
)

func printStatus(w io.Writer, st api.Status) {
	n := st.Node
	subnet := n.Subnet
	if subnet == "" {
		subnet = "none"
	}
	fmt.Fprintf(w, "node %s  address %s  subnet %s  wireguard %s %s port %d\n", n.Name, n.Address, subnet, n.WireGuard.Mode, n.WireGuard.Interface, n.WireGuard.Port)
	if n.SubnetErr != "" {
		fmt.Fprintf(w, "problem: %s\n", n.SubnetErr)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tSUBNET\tENDPOINT\tHANDSHAKE\tRX\tTX")
	for _, m := range st.Members {
		name := m.Name
		if m.Self {
			name += " (this node)"
		}
		hs, rx, tx := "-", "-", "-"
		if !m.Self {
			if m.WireGuard.LastHandshake != nil {
				hs = time.Since(*m.WireGuard.LastHandshake).Round(time.Second).String() + " ago"
			} else {
				hs = "never"
			}
			rx, tx = bytes(m.WireGuard.RxBytes), bytes(m.WireGuard.TxBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Address, m.State, orDash(m.Subnet), orDash(m.WireGuard.Endpoint), hs, rx, tx)
	}
	tw.Flush()
	for _, is := range st.ServiceIssues {
		if is.Pending != "" {
			fmt.Fprintf(w, "service %s pending: %s\n", is.Service, is.Pending)
		}
		if is.Conflict != "" {
			fmt.Fprintf(w, "service %s address conflict: %s\n", is.Service, is.Conflict)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "list stored objects of a kind (namespaces, pods)",
		ArgsUsage: "KIND [NAME]",
		Flags: []cli.Flag{
			socketFlag, outputFlag,
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "only this namespace (default: every namespace)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return fmt.Errorf("get: give a kind and optionally a name, e.g. netloom get pods")
			}
			kind, err := objects.NormalizeKind(c.Args().Get(0))
			if err != nil {
				return err
			}
			q := url.Values{"kind": {kind}, "namespace": {c.String("namespace")}, "name": {c.Args().Get(1)}}
			var list []api.Object
			if err := client(c).Do(c.Context, "GET", api.PathObjects+"?"+q.Encode(), nil, &list); err != nil {
				return err
			}
			var docs []json.RawMessage
			for _, o := range list {
				if o.Object != nil {
					docs = append(docs, o.Object)
				}
			}
			switch c.String("output") {
			case "json":
				if c.NArg() == 2 && len(docs) == 1 {
					return printJSON(os.Stdout, docs[0])
				}
				return printJSON(os.Stdout, map[string]any{"apiVersion": "v1", "kind": "List", "items": nonNil(docs)})
			case "yaml":
				if c.NArg() == 2 && len(docs) == 1 {
					return printYAML(os.Stdout, docs[0])
				}
				return printYAML(os.Stdout, map[string]any{"apiVersion": "v1", "kind": "List", "items": nonNil(docs)})
			case "":
			default:
				return fmt.Errorf("--output %q: use json or yaml", c.String("output"))
			}
			if len(list) == 0 {
				plural := strings.ToLower(kind) + "s"
				if info, ok := objects.Lookup(kind); ok {
					plural = info.Plural
				}
				fmt.Fprintf(os.Stderr, "no %s found\n", plural)
				return nil
			}
			var rows [][]string
			switch kind {
			case "Pod":
				// Pods attached by CNI may have no Pod object: the table is
				// built from what the agent knows.
				rows = [][]string{{"NAMESPACE", "NAME", "IP", "NODE", "LABELS"}}
				for _, o := range list {
					rows = append(rows, []string{o.Namespace, o.Name, orDash(o.IP), orDash(o.Node), labels(o.Object)})
				}
			case "NetworkPolicy":
				selected := map[string][]string{}
				for _, o := range list {
					selected[o.Namespace+"/"+o.Name] = nonNilStrings(o.Selects)
				}
				rows, err = objects.NetworkPolicyTable(docs, selected)
			case "Service":
				where := map[string]objects.ServicePlace{}
				for _, o := range list {
					where[o.Namespace+"/"+o.Name] = objects.ServicePlace{ClusterIP: o.ClusterIP, ExternalIP: o.ExternalIP, Owner: o.Owner, Pending: o.Pending, Conflict: o.Conflict}
				}
				rows, err = objects.ServiceTable(docs, where)
			default:
				rows, err = objects.Table(kind, docs)
			}
			if err != nil {
				return err
			}
			return objects.WriteTable(os.Stdout, rows)
		},
	}
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNil(d []json.RawMessage) []json.RawMessage {
	if d == nil {
		return []json.RawMessage{}
	}
	return d
}

func labels(raw json.RawMessage) string {
	var o struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if raw == nil || json.Unmarshal(raw, &o) != nil || len(o.Metadata.Labels) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range o.Metadata.Labels {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
