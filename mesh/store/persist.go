package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// fileFormat is the version of store.json's layout.
const fileFormat = 1

// tempPrefix starts the names of the temporary files writeAtomic creates
// (renameio appends a random number).
const tempPrefix = "." + FileName

// file is the layout of store.json.
type file struct {
	Format  int     `json:"format"`
	Node    string  `json:"node"`
	Entries []Entry `json:"entries"`
}

// load reads path. A missing file is an empty store.
func load(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	corrupt := func(why string) error {
		return fmt.Errorf("%s is corrupt (%s): move it aside and restart; the node re-syncs the store from its peers", path, why)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, corrupt(err.Error())
	}
	if f.Format != fileFormat {
		return nil, corrupt(fmt.Sprintf("format %d, want %d", f.Format, fileFormat))
	}
	seen := make(map[Key]bool, len(f.Entries))
	for i, e := range f.Entries {
		if err := validRemote(e); err != nil {
			return nil, corrupt(fmt.Sprintf("entry %d: %v", i, err))
		}
		if e.Deleted && len(e.Value) > 0 {
			return nil, corrupt(fmt.Sprintf("entry %d: tombstone with a value", i))
		}
		if seen[e.Key] {
			return nil, corrupt(fmt.Sprintf("entry %d: key %q twice", i, e.Key.String()))
		}
		seen[e.Key] = true
	}
	return f.Entries, nil
}

// persistLocked writes every entry to the store file atomically. Caller
// holds s.mu. On failure the store is marked dirty so Flush retries.
func (s *Store) persistLocked() error {
	es := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		es = append(es, e)
	}
	sortEntries(es)
	err := writeAtomic(s.path, func(w *bufio.Writer) error {
		node, err := json.Marshal(s.node)
		if err != nil {
			return err
		}
		// Written by hand so that each entry sits on its own line.
		fmt.Fprintf(w, `{"format":%d,"node":%s,"entries":`, fileFormat, node)
		w.WriteString("[\n")
		for i, e := range es {
			b, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode %s: %w", e.Key.String(), err)
			}
			if i > 0 {
				w.WriteString(",\n")
			}
			w.Write(b)
		}
		_, err = w.WriteString("\n]}\n")
		return err
	})
	s.dirty = err != nil
	if err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	return nil
}

// writeAtomic writes path through a temporary file in the same directory
// (renameio: write, fsync, rename over path), then fsyncs the directory so
// the rename survives a power loss. The file has mode 0600. A crash at any
// moment leaves either the old file or the new one, never a part of one.
func writeAtomic(path string, write func(*bufio.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithStaticPermissions(0o600))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	w := bufio.NewWriterSize(f, 64<<10)
	if err := write(w); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// removeStaleTemps deletes temporary files a crash left behind.
func removeStaleTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
