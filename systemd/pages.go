package systemd

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

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

// mapping is one address range of /proc/PID/maps.
type mapping struct{ start, end uintptr }

// fileID names a file as /proc/PID/maps does: device and inode.
type fileID struct {
	major, minor uint32
	inode        uint64
}

// readOnlyMappings returns the mappings in maps (the text of /proc/PID/maps)
// of the file id that the process cannot write: those a release may drop.
// A writable mapping (the binary's data) would lose what was written to it
// and is never returned; neither is a mapping of any other file.
func readOnlyMappings(maps string, id fileID) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(strings.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode [path]
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		perms, dev, inode := f[1], f[3], f[4]
		if len(perms) < 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		if inode != strconv.FormatUint(id.inode, 10) || dev != fmt.Sprintf("%02x:%02x", id.major, id.minor) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %q: no address range", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err := errors.Join(err1, err2); err != nil || end <= start {
			return nil, fmt.Errorf("maps line %q: bad address range", sc.Text())
		}
		out = append(out, mapping{uintptr(start), uintptr(end)})
	}
	return out, sc.Err()
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
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	ms, err := readOnlyMappings(string(maps), fileID{unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino})
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: /proc/self/maps: %w", err)
	}
	if len(ms) == 0 {
		return 0, errors.New("release start-up pages: /proc/self/maps shows no read-only mapping of the binary")
	}
	before := rssFile()
	var errs []error
	for _, m := range ms {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); e != 0 {
			errs = append(errs, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, e))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	return before - rssFile(), nil
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
// of /proc/self/status), 0 when it cannot be read.
func rssFile() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
