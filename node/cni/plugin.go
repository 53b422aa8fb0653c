package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/netloom/netloom/node/api"
)

// About is what the plugin prints when run without CNI_COMMAND.
const About = "netloom"

// SupportedVersions are the CNI spec versions of configurations the plugin
// accepts. CHECK needs 0.4.0 or later, STATUS 1.1.0.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// agentTimeout bounds one request to the agent. ADD may wait for the agent
// to have a subnet; the runtime has its own, longer, deadline.
const agentTimeout = 30 * time.Second

// Main runs the plugin: it reads CNI_* from the environment and the netconf
// from stdin, prints the result or a types.Error to stdout and exits non-zero
// on error. main.go calls it when CNI_COMMAND is set.
func Main() {
	if err := precheckNetConf(); err != nil {
		if perr := err.Print(); perr != nil {
			fmt.Fprintln(os.Stderr, perr)
		}
		os.Exit(1)
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
	}, version.PluginSupports(SupportedVersions...), About)
}

// precheckNetConf reads the netconf before skel does, so that a malformed
// one (no cniVersion, not JSON) is reported by field rather than as skel's
// "incompatible CNI versions", and puts it back on stdin for skel.
func precheckNetConf() *types.Error {
	switch os.Getenv("CNI_COMMAND") {
	case "ADD", "DEL", "CHECK", "STATUS", "GC":
	default:
		return nil
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("read the netconf from stdin: %v", err), "")
	}
	if _, err := ParseNetConf(data); err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("pass the netconf on: %v", err), "")
	}
	go func() {
		w.Write(data)
		w.Close()
	}()
	os.Stdin = r
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	pod, err := ParsePodArgs(args.Args)
	if err != nil {
		return err
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	if err := notHostNS(args.Netns); err != nil {
		return err
	}

	client := api.NewClient(conf.Socket)
	req := api.CNIRequest{
		ContainerID:  args.ContainerID,
		IfName:       args.IfName,
		Netns:        args.Netns,
		PodNamespace: pod.Namespace,
		PodName:      pod.Name,
		PodUID:       pod.UID,
	}
	var resp api.CNIResponse
	if err := callAgent(client, api.PathCNIAdd, req, &resp); err != nil {
		return agentError("ADD", args, err)
	}

	result, err := attach(args, podNS, resp)
	if err == nil {
		var out types.Result
		out, err = result.GetAsVersion(conf.CNIVersion)
		if err == nil {
			return out.Print()
		}
		err = types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("convert result to CNI version %s: %v", conf.CNIVersion, err), "")
	}

	// Undo: nothing of this attachment may stay behind. Deleting the host
	// side removes the pair; the pod side is left alone because an
	// interface of that name there may not be ours.
	hostName := HostVethName(args.ContainerID, args.IfName)
	var undo error
	if derr := delLink(hostName); derr != nil {
		undo = fmt.Errorf("delete host veth %q: %w", hostName, derr)
	}
	if derr := callAgent(client, api.PathCNIDel, req, nil); derr != nil {
		undo = errors.Join(undo, fmt.Errorf("release the address: %w", derr))
	}
	if undo != nil {
		return withSuffix(err, "; cleaning up also failed: "+oneLine(undo))
	}
	return err
}

// attach wires the pod to the bridge as resp says.
func attach(args *skel.CmdArgs, podNS ns.NetNS, resp api.CNIResponse) (*types100.Result, error) {
	a, err := parseAttachment(resp)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	gwPrefix := netip.PrefixFrom(a.Gateway, a.IP.Bits())
	if _, err := EnsureBridge(a.Bridge, gwPrefix, a.MTU); err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("open the host network namespace: %v", err), "")
	}
	defer hostNS.Close()

	hostName := HostVethName(args.ContainerID, args.IfName)
	// A host veth of this name can only be left from an earlier ADD of the
	// same container and interface that the runtime did not DEL.
	if err := delLink(hostName); err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("remove stale host veth %q: %v", hostName, err), "")
	}

	var host, pod net.Interface
	err = podNS.Do(func(_ ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(args.IfName); err == nil {
			return fmt.Errorf("interface %q already exists in %s; pick another CNI_IFNAME or DEL the old attachment", args.IfName, args.Netns)
		}
		var err error
		host, pod, err = ip.SetupVethWithName(args.IfName, hostName, a.MTU, "", hostNS)
		if err != nil {
			return fmt.Errorf("create veth pair %s/%s: %w", args.IfName, hostName, err)
		}
		return configurePod(args.IfName, a)
	})
	if err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}

	if err := plugHost(hostName, a.Bridge); err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	return buildResult(a,
		link{Name: host.Name, MAC: host.HardwareAddr.String(), MTU: host.MTU},
		link{Name: pod.Name, MAC: pod.HardwareAddr.String(), MTU: pod.MTU, Sandbox: args.Netns},
	), nil
}

// configurePod runs in the pod netns: address, up, default route, lo up.
func configurePod(ifName string, a attachment) error {
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %q in the pod: %w", ifName, err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ptr(ipNet(a.IP))}); err != nil {
		return fmt.Errorf("add address %s to %q: %w", a.IP, ifName, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", ifName, err)
	}
	if err := ip.AddDefaultRoute(net.IP(a.Gateway.AsSlice()), l); err != nil {
		return fmt.Errorf("add default route via %s dev %s in the pod (does the pod already have one?): %w", a.Gateway, ifName, err)
	}
	lo, err := netlinksafe.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo in the pod: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in the pod: %w", err)
	}
	return nil
}

// plugHost makes the host veth a port of the bridge, up.
func plugHost(hostName, bridge string) error {
	hl, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("look up host veth %q: %w", hostName, err)
	}
	br, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %q: %w", bridge, err)
	}
	if err := netlink.LinkSetMaster(hl, br); err != nil {
		return fmt.Errorf("attach host veth %q to bridge %q: %w", hostName, bridge, err)
	}
	// Pods on one node do not talk at layer 2: the bridge answers their ARP
	// (proxy_arp_pvlan, see EnsureBridge) and the node routes between them,
	// so every pod packet passes the forward hook where policy is enforced.
	if err := netlink.LinkSetIsolated(hl, true); err != nil {
		return fmt.Errorf("isolate bridge port %q: %w", hostName, err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fmt.Errorf("set host veth %q up: %w", hostName, err)
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	// The pod identity is informational for DEL; a bad CNI_ARGS must not
	// keep an address allocated.
	pod, _ := ParsePodArgs(args.Args)

	if err := notHostNS(args.Netns); err != nil {
		return err // never delete CNI_IFNAME of the host
	}
	var podNS ns.NetNS
	if args.Netns != "" {
		if n, err := ns.GetNS(args.Netns); err == nil {
			podNS = n
			defer podNS.Close()
		} // a netns that is gone took the veth with it
	}
	vethErr := removeVeth(args, podNS)

	client := api.NewClient(conf.Socket)
	req := api.CNIRequest{
		ContainerID:  args.ContainerID,
		IfName:       args.IfName,
		Netns:        args.Netns,
		PodNamespace: pod.Namespace,
		PodName:      pod.Name,
		PodUID:       pod.UID,
	}
	if err := callAgent(client, api.PathCNIDel, req, nil); err != nil {
		if vethErr != nil {
			return withSuffix(agentError("DEL", args, err), "; "+oneLine(vethErr))
		}
		return agentError("DEL", args, err)
	}
	if vethErr != nil {
		return types.NewError(types.ErrInternal, oneLine(vethErr), "")
	}
	return nil
}

// removeVeth deletes the attachment's veth pair, from the pod side when the
// pod netns is given and from the host side. Missing links are fine.
func removeVeth(args *skel.CmdArgs, podNS ns.NetNS) error {
	var errs []error
	if podNS != nil {
		err := podNS.Do(func(ns.NetNS) error { return delLink(args.IfName) })
		if err != nil {
			errs = append(errs, fmt.Errorf("delete %q in %s: %w", args.IfName, args.Netns, err))
		}
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	if err := delLink(hostName); err != nil {
		errs = append(errs, fmt.Errorf("delete host veth %q: %w", hostName, err))
	}
	return errors.Join(errs...)
}

// delLink deletes a link of the current netns; a missing one is fine.
func delLink(name string) error {
	err := ip.DelLinkByName(name)
	if err == nil || errors.Is(err, ip.ErrLinkNotFound) {
		return nil
	}
	// The link may vanish between look-up and delete (its peer went).
	if _, lerr := netlinksafe.LinkByName(name); lerr != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(lerr, &nf) {
			return nil
		}
	}
	return err
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	pod, err := ParsePodArgs(args.Args)
	if err != nil {
		return err
	}
	var prev *types100.Result
	if conf.PrevResult != nil {
		prev, err = types100.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("netloom netconf: field \"prevResult\": convert to CNI %s: %v", types100.ImplementedSpecVersion, err), "")
		}
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()

	client := api.NewClient(conf.Socket)
	req := api.CNIRequest{
		ContainerID:  args.ContainerID,
		IfName:       args.IfName,
		Netns:        args.Netns,
		PodNamespace: pod.Namespace,
		PodName:      pod.Name,
		PodUID:       pod.UID,
	}
	var resp api.CNIResponse
	if err := callAgent(client, api.PathCNICheck, req, &resp); err != nil {
		return agentError("CHECK", args, err)
	}
	a, err := parseAttachment(resp)
	if err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}

	err = podNS.Do(func(ns.NetNS) error {
		if err := checkPod(args.IfName, a); err != nil {
			return err
		}
		return checkPrevResult(args, a, prev)
	})
	if err == nil {
		err = checkHost(HostVethName(args.ContainerID, args.IfName), a)
	}
	if err != nil {
		return types.NewError(types.ErrInternal, "CHECK "+args.ContainerID+"/"+args.IfName+": "+err.Error(), "")
	}
	return nil
}

// checkPod runs in the pod netns.
func checkPod(ifName string, a attachment) error {
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("interface %q is missing in the pod: %w", ifName, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("interface %q in the pod is a %s, not a veth", ifName, l.Type())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %q in the pod is down", ifName)
	}
	if a.MTU > 0 && l.Attrs().MTU != a.MTU {
		return fmt.Errorf("interface %q in the pod has mtu %d, want %d", ifName, l.Attrs().MTU, a.MTU)
	}
	has, err := hasAddr(l, a.IP)
	if err != nil {
		return err
	}
	if !has {
		return fmt.Errorf("interface %q in the pod lacks address %s", ifName, a.IP)
	}
	family := netlink.FAMILY_V4
	if a.IP.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlinksafe.RouteList(l, family)
	if err != nil {
		return fmt.Errorf("list routes of %q in the pod: %w", ifName, err)
	}
	for _, r := range routes {
		if !ip.IsIPNetZero(r.Dst) || r.Gw == nil {
			continue
		}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.Unmap() == a.Gateway {
			return nil
		}
	}
	return fmt.Errorf("the pod has no default route via %s dev %s", a.Gateway, ifName)
}

// checkPrevResult compares the runtime's prevResult with the agent's answer
// and with the pod netns (it runs there).
func checkPrevResult(args *skel.CmdArgs, a attachment, prev *types100.Result) error {
	if prev == nil {
		return nil
	}
	found := false
	for _, c := range prev.IPs {
		if p, ok := prefixOf(&c.Address); ok && p == a.IP {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("prevResult does not hold the address %s the agent has for this pod", a.IP)
	}
	for _, in := range prev.Interfaces {
		if in.Name != args.IfName || in.Sandbox == "" || in.Mac == "" {
			continue
		}
		l, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("interface %q is missing in the pod: %w", args.IfName, err)
		}
		if !strings.EqualFold(l.Attrs().HardwareAddr.String(), in.Mac) {
			return fmt.Errorf("interface %q in the pod has mac %s, prevResult says %s", args.IfName, l.Attrs().HardwareAddr, in.Mac)
		}
	}
	if err := ip.ValidateExpectedInterfaceIPs(args.IfName, prev.IPs); err != nil {
		return fmt.Errorf("prevResult addresses: %w", err)
	}
	if err := ip.ValidateExpectedRoute(prev.Routes); err != nil {
		return fmt.Errorf("prevResult routes: %w", err)
	}
	return nil
}

// checkHost runs in the host netns: the host veth is up and on the bridge.
func checkHost(hostName string, a attachment) error {
	hl, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %q is missing: %w", hostName, err)
	}
	br, err := netlinksafe.LinkByName(a.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %q is missing: %w", a.Bridge, err)
	}
	if hl.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %q is not a port of bridge %q", hostName, a.Bridge)
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %q is down", hostName)
	}
	return nil
}

// cmdStatus (CNI 1.1.0) says whether ADD can work now: the agent answers and
// has a pod subnet.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	var st api.Status
	client := api.NewClient(conf.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	if err := client.Do(ctx, http.MethodGet, api.PathStatus, nil, &st); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, oneLine(err), "")
	}
	if st.Node.Subnet == "" {
		msg := "netloom agent has no pod subnet yet"
		if st.Node.SubnetErr != "" {
			msg += ": " + st.Node.SubnetErr
		}
		return types.NewError(types.ErrPluginNotAvailable, msg+"; see 'netloom status'", "")
	}
	return nil
}

// openNetNS opens the pod's network namespace for ADD and CHECK.
func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err == nil {
		return n, nil
	}
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	switch {
	case errors.As(err, &notExist):
		return nil, types.NewError(types.ErrInvalidNetNS,
			fmt.Sprintf("network namespace %s (CNI_NETNS) does not exist; the pod sandbox is gone", path), "")
	case errors.As(err, &notNS):
		return nil, types.NewError(types.ErrInvalidNetNS,
			fmt.Sprintf("%s (CNI_NETNS) is not a network namespace; the pod sandbox is gone or the path is wrong", path), "")
	}
	return nil, types.NewError(types.ErrInvalidNetNS,
		fmt.Sprintf("open network namespace %s (CNI_NETNS): %v", path, err), "")
}

// notHostNS refuses a CNI_NETNS that is the plugin's own network namespace
// (skel checks this too, but only after the command ran).
func notHostNS(path string) error {
	if path == "" {
		return nil
	}
	same, err := cnins.CheckNetNS(path)
	if err != nil {
		return err
	}
	if same {
		return types.NewError(types.ErrInvalidNetNS,
			fmt.Sprintf("CNI_NETNS %s is the host's network namespace, not a pod's; refusing to touch its interfaces", path), "")
	}
	return nil
}

// callAgent posts req to the agent with a bounded wait.
func callAgent(c *api.Client, path string, req api.CNIRequest, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	return c.Do(ctx, http.MethodPost, path, req, out)
}

// agentError turns a failed agent call into a CNI error: an agent that is
// not running is "try again later" (11), anything else is the agent's word.
func agentError(op string, args *skel.CmdArgs, err error) error {
	if errors.Is(err, api.ErrNotRunning) {
		return types.NewError(types.ErrTryAgainLater, oneLine(err), "")
	}
	return types.NewError(types.ErrInternal,
		fmt.Sprintf("netloom agent refused %s of %s/%s: %s", op, args.ContainerID, args.IfName, oneLine(err)), "")
}

// withSuffix appends to the message of a *types.Error (or wraps err).
func withSuffix(err error, suffix string) error {
	var te *types.Error
	if errors.As(err, &te) {
		return types.NewError(te.Code, te.Msg+suffix, te.Details)
	}
	return types.NewError(types.ErrInternal, oneLine(err)+suffix, "")
}

// oneLine flattens errors.Join output.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
