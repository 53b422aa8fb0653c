package node

import (
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		Name: "n1", DataDir: "/tmp/d", Socket: "/tmp/s.sock", RunDir: "/tmp/r", AdvertiseAddr: "192.0.2.1",
		GossipPort: 7946, WGPort: 51820, WGIface: "netloom0", Bridge: "netloom-br0",
		ClusterCIDR: "10.244.0.0/16", NodeMask: 24, WireGuard: "auto", Exe: "/bin/true",
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		errHas string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"bad cidr", func(c *Config) { c.ClusterCIDR = "10.244.0.0" }, "--cluster-cidr"},
		{"host bits", func(c *Config) { c.ClusterCIDR = "10.244.1.0/16" }, "did you mean 10.244.0.0/16"},
		{"ipv6 cluster", func(c *Config) { c.ClusterCIDR = "fd00:10:244::/48" }, "pod networks are IPv4 only"},
		{"ipv6 services", func(c *Config) { c.ServiceCIDR = "fd00:10:96::/112" }, "--service-cidr"},
		{"mask too small", func(c *Config) { c.NodeMask = 8 }, "--node-mask"},
		{"mask too large", func(c *Config) { c.NodeMask = 31 }, "--node-mask"},
		{"negative resync", func(c *Config) { c.ResyncInterval = -time.Second }, "--resync-interval -1s: give a positive duration"},
		{"wireguard mode", func(c *Config) { c.WireGuard = "fast" }, "--wireguard"},
		{"gossip port", func(c *Config) { c.GossipPort = 70000 }, "--gossip-port"},
		{"wg port", func(c *Config) { c.WGPort = 0 }, "--wg-port"},
		{"wg procs", func(c *Config) { c.WGProcs = -1 }, "--wg-procs -1 is negative"},
		{"iface too long", func(c *Config) { c.WGIface = "a-very-long-iface" }, "--wg-iface"},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "host.example" }, "--advertise-addr"},
		{"name with space", func(c *Config) { c.Name = "a b" }, "--name"},
		{"node port range", func(c *Config) { c.NodePortRange = "32767-30000" }, "--service-node-port-range: port range \"32767-30000\""},
		{"nodeport addresses", func(c *Config) { c.NodePortAddresses = []string{"lan"} }, "--nodeport-addresses \"lan\": give IPv4 CIDRs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			s, err := c.check()
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("check() error: %v", err)
				}
				if s.cidr.String() != "10.244.0.0/16" || s.advertise.String() != "192.0.2.1" || s.mtu <= 0 {
					t.Errorf("check() = cidr %s advertise %s mtu %d", s.cidr, s.advertise, s.mtu)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("check() error = %v, want one containing %q", err, tt.errHas)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has several lines: %q", err)
			}
		})
	}
}

func TestConfigNodePorts(t *testing.T) {
	c := validConfig()
	s, err := c.check()
	if err != nil {
		t.Fatal(err)
	}
	// Defaults: Kubernetes' range; the advertise address (its interface is
	// not on this machine, so only the address itself).
	if s.nodePorts.String() != "30000-32767" || len(s.nodePortAddrs) != 1 || s.nodePortAddrs[0].String() != "192.0.2.1/32" {
		t.Errorf("defaults: range %s, addresses %v", s.nodePorts, s.nodePortAddrs)
	}
	c.NodePortRange, c.NodePortAddresses = "31000-31010", []string{"all", "192.168.1.0/24"}
	if s, err = c.check(); err != nil {
		t.Fatal(err)
	}
	if s.nodePorts.String() != "31000-31010" || len(s.nodePortAddrs) != 2 || s.nodePortAddrs[0].String() != "0.0.0.0/0" || s.nodePortAddrs[1].String() != "192.168.1.0/24" {
		t.Errorf("range %s, addresses %v", s.nodePorts, s.nodePortAddrs)
	}
}
