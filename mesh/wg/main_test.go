package wg

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
)

// TestMain lets the test binary double as the companion: Open starts
// Config.Exe (the test binary in the root tests) as `wg-companion ...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == CompanionCommand {
		os.Exit(companionMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func companionMain(args []string) int {
	fs := flag.NewFlagSet(CompanionCommand, flag.ContinueOnError)
	iface := fs.String("iface", "", "link name")
	mtu := fs.Int("mtu", DefaultMTU, "MTU")
	runDir := fs.String("run-dir", DefaultRunDir, "pid file directory")
	procs := fs.Int("procs", 0, "GOMAXPROCS")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := RunCompanion(context.Background(), *iface, *mtu, *runDir, *procs, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
