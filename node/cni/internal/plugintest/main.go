// Command plugintest is the CNI plugin alone, built by the tests of node/cni
// to run it the way a container runtime does.
package main

import "github.com/netloom/netloom/node/cni"

func main() { cni.Main() }
