package node

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// Files of the data dir besides SecretFile and the store's store.json.
const (
	KeyFile   = "wireguard.key" // this node's WireGuard private key
	PodsFile  = "pods.json"     // the addresses of this node's pods
	PeersFile = "peers.json"    // members to contact on the next start
)

// writeFileAtomic replaces path with data: a crash leaves the old file or
// the new one, never a part of either (renameio writes a temporary file
// named "." + the file's name + a number, fsyncs and renames it).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return renameio.WriteFile(path, data, mode, renameio.WithTempDir(filepath.Dir(path)))
}

// dataFiles are the files of the data dir written with an atomic rename
// (store.json cleans up after itself).
var dataFiles = []string{SecretFile, KeyFile, PodsFile, PeersFile}

// removeStaleTemps deletes the temporary files of atomic writes that a crash
// interrupted.
func removeStaleTemps(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		for _, f := range dataFiles {
			rest, ok := strings.CutPrefix(e.Name(), "."+f)
			if ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}
