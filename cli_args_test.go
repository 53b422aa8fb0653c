package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInterspersed(t *testing.T) {
	app := newApp()
	tests := []struct {
		in, want []string
	}{
		{[]string{"netloom", "get", "pods", "-n", "x", "-o", "json"}, []string{"netloom", "get", "-n", "x", "-o", "json", "pods"}},
		{[]string{"netloom", "get", "-n", "x", "pods"}, []string{"netloom", "get", "-n", "x", "pods"}},
		{[]string{"netloom", "--log-level", "debug", "status", "--socket", "/s"}, []string{"netloom", "--log-level", "debug", "status", "--socket", "/s"}},
		{[]string{"netloom", "policy", "trace", "x/a", "y/b", "80/tcp", "--socket=/s"}, []string{"netloom", "policy", "trace", "--socket=/s", "x/a", "y/b", "80/tcp"}},
		{[]string{"netloom", "events", "-f", "--socket", "/s"}, []string{"netloom", "events", "-f", "--socket", "/s"}},
		{[]string{"netloom", "apply", "-f", "-"}, []string{"netloom", "apply", "-f", "-"}},
		{[]string{"netloom", "join", "10.0.0.1", "--socket", "/s"}, []string{"netloom", "join", "--socket", "/s", "10.0.0.1"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, interspersed(app, tt.in)); diff != "" {
			t.Errorf("interspersed(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}
