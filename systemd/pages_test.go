package systemd

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

func TestReleasable(t *testing.T) {
	dev := unix.Mkdev(8, 1)
	perms := func(p string) *procfs.ProcMapPermissions {
		return &procfs.ProcMapPermissions{Read: p[0] == 'r', Write: p[1] == 'w', Execute: p[2] == 'x', Shared: p[3] == 's', Private: p[3] == 'p'}
	}
	m := func(start, end uintptr, p string, dev, ino uint64, path string) *procfs.ProcMap {
		return &procfs.ProcMap{StartAddr: start, EndAddr: end, Perms: perms(p), Dev: dev, Inode: ino, Pathname: path}
	}
	maps := []*procfs.ProcMap{
		m(0x400000, 0x12b0000, "r-xp", dev, 4194321, "/usr/local/bin/netloom"),
		m(0x12b0000, 0x222a000, "r--p", dev, 4194321, "/usr/local/bin/netloom"),
		m(0x222a000, 0x22bf000, "rw-p", dev, 4194321, "/usr/local/bin/netloom"),
		m(0x22bf000, 0x4308000, "rw-p", 0, 0, ""),
		m(0x7f0000000000, 0x7f0000021000, "r-xp", dev, 4194322, "/usr/lib/other.so"),
		m(0x7f0000021000, 0x7f0000022000, "r--s", dev, 4194321, "/usr/local/bin/netloom"),
		m(0x7f0000030000, 0x7f0000031000, "r-xp", unix.Mkdev(8, 2), 4194321, "/mnt/same-inode-other-disk"),
		m(0x7ffc00000000, 0x7ffc00021000, "rw-p", 0, 0, "[stack]"),
	}
	got := releasable(maps, dev, 4194321)
	want := []*procfs.ProcMap{maps[0], maps[1]}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("read-only mappings of the binary (-want +got):\n%s", d)
	}

	// A deleted binary (replaced by an upgrade) keeps its device and inode.
	deleted := []*procfs.ProcMap{m(0x400000, 0x12b0000, "r-xp", unix.Mkdev(0, 0x2d), 77, "/usr/local/bin/netloom (deleted)")}
	if got := releasable(deleted, unix.Mkdev(0, 0x2d), 77); len(got) != 1 {
		t.Errorf("deleted binary: got %v, want one mapping", got)
	}
}

// The release drops resident pages of the test binary (its start-up ran
// code in every package it links), and the process goes on running what it
// needs: the pages come back from the page cache.
func TestReleaseStartupPages(t *testing.T) {
	self, err := procfs.Self()
	if err != nil {
		t.Fatal(err)
	}
	before := rssFile(self)
	if before == 0 {
		t.Skip("no RssFile in /proc/self/status")
	}
	released, err := ReleaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(self)
	if after >= before || released <= 0 {
		t.Errorf("RssFile %d kB before the release, %d kB after (released %d kB): want it smaller", before>>10, after>>10, released>>10)
	}
	// The process runs on (the code it needs faults back), and releases
	// again without harm.
	if _, err := ReleaseStartupPages(); err != nil {
		t.Errorf("a second release: %v", err)
	}
	t.Logf("RssFile %d kB -> %d kB", before>>10, after>>10)
}
