// Package systemd installs netloom as a systemd service and talks to
// systemd while the agent runs.
//
// Install writes the unit (netloom.service), the CNI network configuration
// (10-netloom.conflist) and copies the binary to where the unit and the
// container runtime look for it, all under a root directory so that tests
// (and image builders) can install into a tree of their own. Uninstall
// removes exactly those files and never the agent's data.
//
// Ready, Stopping, Status and RunWatchdog speak the sd_notify protocol
// through go-systemd's daemon package. Outside systemd (NOTIFY_SOCKET or
// WATCHDOG_USEC unset) they do nothing and return nil, so the agent calls
// them unconditionally.
//
// ReleaseStartupPages is the other half of finishing start-up: it hands the
// binary's pages that only start-up used back to the page cache, so that
// they stop counting in the resident memory of every netloom process.
package systemd
