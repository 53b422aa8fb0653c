package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready tells systemd that startup is finished (READY=1): with Type=notify
// the unit counts as started only now, so units ordered after netloom wait
// until the pod network is up.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd the agent is shutting down (STOPPING=1).
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status netloom` shows
// (STATUS=...). Line breaks in msg become spaces.
func Status(msg string) error {
	msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
	return notify("STATUS=" + msg)
}

// notify sends one datagram to NOTIFY_SOCKET; nil when it is unset. The
// variable is kept (not unset) because the agent notifies many times; the
// agent's children must not inherit it (they are not the main process).
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// RunWatchdog pings systemd's watchdog (WATCHDOG=1) at half the interval
// systemd asked for (WatchdogSec, passed as WATCHDOG_USEC) until ctx is
// done, then returns nil. It returns nil at once when the watchdog is not
// enabled for this process, and an error when WATCHDOG_USEC is malformed.
// A failed ping is logged and retried at the next tick.
func RunWatchdog(ctx context.Context) error {
	return RunWatchdogCheck(ctx, nil)
}

// RunWatchdogCheck is RunWatchdog that pings only while healthy returns nil
// (healthy nil means always). When the agent is wedged (a reconcile loop
// stuck), it stops pinging and systemd restarts it after WatchdogSec.
func RunWatchdogCheck(ctx context.Context, healthy func() error) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("systemd watchdog: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	period := interval / 2
	if period <= 0 {
		period = interval
	}
	log := slog.Default().With("component", "systemd-watchdog")
	failing := false
	ping := func() {
		if healthy != nil {
			if err := healthy(); err != nil {
				if !failing {
					log.Warn("unhealthy, not pinging the watchdog", "err", err)
				}
				failing = true
				return
			}
		}
		if err := notify(daemon.SdNotifyWatchdog); err != nil {
			if !failing {
				log.Warn("watchdog ping failed", "err", err)
			}
			failing = true
			return
		}
		failing = false
	}
	ping()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			ping()
		}
	}
}
