package systemd

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Start-up pages. Package initialisation runs code and reads type data in
// every one of the binary's several hundred packages, and each page fault
// on the binary maps the 64 KiB around the page (the kernel's fault-around):
// an idle agent kept 24 MiB of the binary resident although it used about
// 17 MiB of it again afterwards, its WireGuard companion 21 MiB of which it
// used 7-11 (BENCHMARKS.md section 3). Once start-up is finished, a process
// calls ReleaseStartupPages: it drops its own page-table entries for the
// binary's read-only mappings (code, read-only data, the runtime's function
// tables) with madvise(MADV_DONTNEED). For a mapping nobody wrote to that
// discards nothing: the pages stay in the page cache, and whatever runs
// again maps its page back from there with a minor fault, as at start. What
// only start-up used is then plain page cache, which the kernel can reclaim
// without unmapping anything, instead of counting in every netloom
// process's resident memory.
//
// A debugger's breakpoints are private copies of code pages; a release while
// one is attached drops them.

// releasable returns the mappings of maps (a process's /proc/PID/maps) that
// map the file with device dev and inode ino privately without write
// permission: those a release may drop. A writable mapping (the binary's
// data) would lose what was written to it and is never returned; neither
// is a mapping of any other file.
func releasable(maps []*procfs.ProcMap, dev, ino uint64) []*procfs.ProcMap {
	var out []*procfs.ProcMap
	for _, m := range maps {
		if m.Dev == dev && m.Inode == ino && m.Perms != nil && m.Perms.Read && !m.Perms.Write && m.Perms.Private {
			out = append(out, m)
		}
	}
	return out
}

// ReleaseStartupPages drops this process's mappings of the pages of its own
// binary it does not write (see above) and returns how much smaller its
// resident file-backed memory (RssFile) became. Call it once start-up is
// finished; calling it again is harmless.
func ReleaseStartupPages() (released int64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("release start-up pages: stat /proc/self/exe: %w", err)
	}
	self, err := procfs.Self()
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	maps, err := self.ProcMaps()
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: /proc/self/maps: %w", err)
	}
	ms := releasable(maps, uint64(st.Dev), st.Ino)
	if len(ms) == 0 {
		return 0, errors.New("release start-up pages: /proc/self/maps shows no read-only mapping of the binary")
	}
	before := rssFile(self)
	var errs []error
	for _, m := range ms {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.StartAddr, m.EndAddr-m.StartAddr, unix.MADV_DONTNEED); e != 0 {
			errs = append(errs, fmt.Errorf("madvise %#x-%#x: %w", m.StartAddr, m.EndAddr, e))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	return before - rssFile(self), nil
}

// ReleasedLog is the message logged after a release.
const ReleasedLog = "released the binary's start-up pages"

// ReleaseStartupPagesLogged is ReleaseStartupPages for a process that
// goes on when the release fails: it logs a warning then, and otherwise
// the amount released (ReleasedLog, with the key MiB).
func ReleaseStartupPagesLogged(log *slog.Logger) {
	released, err := ReleaseStartupPages()
	if err != nil {
		log.Warn("the binary's start-up pages stay resident", "err", err)
		return
	}
	log.Info(ReleasedLog, "MiB", float64(released)/(1<<20))
}

// rssFile is the process's resident file-backed memory in bytes (RssFile
// of /proc/PID/status), 0 when it cannot be read.
func rssFile(p procfs.Proc) int64 {
	st, err := p.NewStatus()
	if err != nil {
		return 0
	}
	return int64(st.RssFile)
}
