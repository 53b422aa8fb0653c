package systemd

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadOnlyMappings(t *testing.T) {
	maps := `00400000-012b0000 r-xp 00000000 08:01 4194321                            /usr/local/bin/netloom
012b0000-0222a000 r--p 00eb0000 08:01 4194321                            /usr/local/bin/netloom
0222a000-022bf000 rw-p 01e2a000 08:01 4194321                            /usr/local/bin/netloom
022bf000-04308000 rw-p 00000000 00:00 0
7f0000000000-7f0000021000 r-xp 00000000 08:01 4194322                    /usr/lib/other.so
7f0000021000-7f0000022000 r--s 00000000 08:01 4194321                    /usr/local/bin/netloom
7f0000030000-7f0000031000 r-xp 00000000 08:02 4194321                    /mnt/same-inode-other-disk
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
`
	got, err := readOnlyMappings(maps, fileID{major: 8, minor: 1, inode: 4194321})
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{{0x400000, 0x12b0000}, {0x12b0000, 0x222a000}}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(mapping{})); d != "" {
		t.Errorf("read-only mappings of the binary (-want +got):\n%s", d)
	}

	// A deleted binary (replaced by an upgrade) keeps its device and inode.
	deleted := "00400000-012b0000 r-xp 00000000 00:2d 77 /usr/local/bin/netloom (deleted)\n"
	got, err = readOnlyMappings(deleted, fileID{major: 0, minor: 0x2d, inode: 77})
	if err != nil || len(got) != 1 {
		t.Errorf("deleted binary: got %v, %v; want one mapping", got, err)
	}

	if _, err := readOnlyMappings("zz-00400000 r-xp 00000000 00:2d 77 /x\n", fileID{minor: 0x2d, inode: 77}); err == nil {
		t.Error("a malformed address range of the binary gave no error")
	}
}

// The release drops resident pages of the test binary (its start-up ran
// code in every package it links), and the process goes on running what it
// needs: the pages come back from the page cache.
func TestReleaseStartupPages(t *testing.T) {
	before := rssFile()
	if before == 0 {
		t.Skip("no RssFile in /proc/self/status")
	}
	released, err := ReleaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile()
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
