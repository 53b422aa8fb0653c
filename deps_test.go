package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The binary must not link client-go's clientset, informer factory,
// listers or apply configurations: they bring every API group of
// Kubernetes, and their package init alone kept 13 MiB more of the binary
// resident in every netloom process (kube.API says more).
func TestBinaryLinksNoClientset(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	banned := []string{"k8s.io/client-go/kubernetes", "k8s.io/client-go/informers", "k8s.io/client-go/listers", "k8s.io/client-go/applyconfigurations", "k8s.io/api/apps/"}
	for _, p := range strings.Fields(string(out)) {
		for _, b := range banned {
			if p == b || strings.HasPrefix(p, strings.TrimSuffix(b, "/")+"/") {
				t.Errorf("the netloom binary links %s: use kube.API, not client-go's clientset", p)
			}
		}
	}
}
