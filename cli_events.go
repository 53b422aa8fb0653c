package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
	"github.com/urfave/cli/v2"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show the agent's recent events (joins, leaves, failures, conflicts, rejected applies)",
		Flags: []cli.Flag{
			socketFlag,
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events until Ctrl-C"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "json: one JSON object per line"},
		},
		Action: func(c *cli.Context) error {
			asJSON := false
			switch c.String("output") {
			case "":
			case "json":
				asJSON = true
			default:
				return fmt.Errorf("--output %q: use json", c.String("output"))
			}
			print := func(w io.Writer, e events.Event) {
				if asJSON {
					_ = json.NewEncoder(w).Encode(e)
					return
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Node, e.Kind, e.Message)
			}
			if !c.Bool("follow") {
				var list []events.Event
				if err := client(c).Do(c.Context, "GET", api.PathEvents, nil, &list); err != nil {
					return err
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				defer tw.Flush()
				if !asJSON {
					fmt.Fprintln(tw, "TIME\tNODE\tKIND\tMESSAGE")
				}
				for _, e := range list {
					print(tw, e)
				}
				return nil
			}
			body, err := client(c).Stream(c.Context, api.PathEvents+"?follow=1")
			if err != nil {
				return err
			}
			defer body.Close()
			sc := bufio.NewScanner(body)
			for sc.Scan() {
				var e events.Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					return fmt.Errorf("read events: %w", err)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				print(tw, e)
				tw.Flush()
			}
			if err := sc.Err(); err != nil && c.Context.Err() == nil {
				return fmt.Errorf("read events: %w", err)
			}
			return nil
		},
	}
}
