package wg

import (
	"runtime"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestCompanionProcs(t *testing.T) {
	for _, c := range []struct{ cpus, want int }{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 2}, {8, 4}, {64, 32}} {
		if got := CompanionProcs(c.cpus); got != c.want {
			t.Errorf("CompanionProcs(%d) = %d, want %d", c.cpus, got, c.want)
		}
	}
	base := Config{Iface: "nltest0", PrivateKey: wgtypes.Key{1}}
	cfg, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if want := CompanionProcs(runtime.GOMAXPROCS(0)); cfg.Procs != want {
		t.Errorf("default Procs = %d, want %d", cfg.Procs, want)
	}
	base.Procs = 5
	if cfg, err := base.withDefaults(); err != nil || cfg.Procs != 5 {
		t.Errorf("Procs 5 became %d, %v", cfg.Procs, err)
	}
	base.Procs = -1
	if _, err := base.withDefaults(); err == nil || !strings.Contains(err.Error(), "companion threads -1 is not valid") {
		t.Errorf("Procs -1: error %v", err)
	}
}
