package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/ipam"
	"github.com/netloom/netloom/mesh/objects"
	"github.com/netloom/netloom/mesh/store"
	"github.com/netloom/netloom/node/api"
	"github.com/netloom/netloom/node/events"
)

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.Status())
	})
	mux.HandleFunc("POST "+api.PathApply, func(w http.ResponseWriter, r *http.Request) { a.handleApply(w, r, false) })
	mux.HandleFunc("POST "+api.PathDelete, func(w http.ResponseWriter, r *http.Request) { a.handleApply(w, r, true) })
	mux.HandleFunc("GET "+api.PathObjects, a.handleGet)
	mux.HandleFunc("POST "+api.PathJoin, a.handleJoin)
	mux.HandleFunc("POST "+api.PathLeave, func(w http.ResponseWriter, r *http.Request) {
		if err := a.requestLeave(); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, map[string]string{"result": "leaving", "drainTimeout": a.cfg.VIPDrainTimeout.String()})
	})
	mux.HandleFunc("GET "+api.PathEvents, a.handleEvents)
	mux.HandleFunc("POST "+api.PathTrace, a.handleTrace)
	mux.HandleFunc("POST "+api.PathCNIAdd, a.handleCNIAdd)
	mux.HandleFunc("POST "+api.PathCNIDel, a.handleCNIDel)
	mux.HandleFunc("POST "+api.PathCNICheck, a.handleCNICheck)
	// Go's profiles of the agent (heap, goroutines, CPU), for finding where
	// memory or time goes on a live node; the socket is root's alone.
	mux.HandleFunc("GET "+api.PathDebug, pprof.Index)
	mux.HandleFunc("GET "+api.PathDebug+"profile", pprof.Profile)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// errRequestTooLarge answers a body over MaxRequestBytes.
var errRequestTooLarge = fmt.Errorf("request larger than %d MiB: split the manifest into several files and apply them one by one", MaxRequestBytes>>20)

func writeErr(w http.ResponseWriter, code int, err error) {
	if errors.Is(err, errRequestTooLarge) {
		code = http.StatusRequestEntityTooLarge
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

// MaxRequestBytes bounds a request body of the local API: 16 MiB, six
// times a manifest of 10,000 services.
const MaxRequestBytes = 16 << 20

// bodyTimeout bounds the reading of a request body, so that a client that
// stops sending holds nothing for long (the headers have their own 5 s).
const bodyTimeout = time.Minute

// decode reads the JSON body of r into v: at most MaxRequestBytes, within
// bodyTimeout.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
	defer rc.SetReadDeadline(time.Time{})
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errRequestTooLarge
	}
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	return nil
}

func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request, del bool) {
	var req api.ApplyRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	objs, err := objects.Parse([]byte(req.Manifest))
	if err != nil {
		a.events.Add(events.ApplyRejected, "", "rejected a manifest: "+err.Error())
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if len(objs) == 0 {
		writeErr(w, http.StatusBadRequest, errors.New("the file holds no object"))
		return
	}
	if a.kube != nil {
		o := objs[0]
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%s %s: this agent runs in Kubernetes mode and reads %ss from the API server %s: use kubectl apply", strings.ToLower(o.Kind), o.Name, o.Kind, a.kubeClients.Server))
		return
	}
	if !del {
		if err := a.validateServices(objs); err != nil {
			a.events.Add(events.ApplyRejected, "", "rejected a manifest: "+err.Error())
			writeErr(w, http.StatusBadRequest, err)
			return
		}
	}
	var puts []store.Put
	var dels []store.Key
	var results []string
	for _, o := range objs {
		k := store.Key{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}
		name := strings.ToLower(o.Kind) + "/" + o.Name
		if o.Namespace != "" {
			name = strings.ToLower(o.Kind) + "/" + o.Namespace + "/" + o.Name
		}
		old, exists := a.store.Get(k)
		if o.Kind == "Service" && !del {
			stamped, err := stampCreated(o.JSON, old.Value, exists, a.cfg.Name)
			if err != nil {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("%s: %w", name, err))
				return
			}
			o.JSON = stamped
		}
		if !del && len(o.JSON) > store.MaxValueSize {
			// The store refuses it; a bad manifest is the client's error.
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%s: the object is %d bytes, more than the limit of %d", name, len(o.JSON), store.MaxValueSize))
			return
		}
		switch {
		case del && exists:
			dels = append(dels, k)
			results = append(results, name+" deleted")
		case del:
			results = append(results, name+" not found")
		case !exists:
			puts = append(puts, store.Put{Key: k, Value: o.JSON})
			results = append(results, name+" created")
		case string(old.Value) == string(o.JSON):
			// Written all the same (ApplyReassert below): under
			// last-writer-wins an older write still on its way from
			// another node would otherwise replace what was just applied.
			puts = append(puts, store.Put{Key: k, Value: o.JSON})
			results = append(results, name+" unchanged")
		default:
			puts = append(puts, store.Put{Key: k, Value: o.JSON})
			results = append(results, name+" configured")
		}
	}
	entries, err := a.store.ApplyReassert(puts, dels)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	a.repl.Publish(entries)
	if a.hub != nil {
		a.hub.Kick()
	}
	if len(entries) > 0 {
		a.events.Add(events.Applied, "", strings.Join(results, ", "))
	}
	writeJSON(w, api.ApplyResponse{Results: results})
}

func (a *Agent) handleGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, err := objects.NormalizeKind(q.Get("kind"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	ns, name := q.Get("namespace"), q.Get("name")
	list := a.objectList(kind, ns, name)
	if name != "" && len(list) == 0 {
		where := ""
		if ns != "" {
			where = " in namespace " + ns
		}
		writeErr(w, http.StatusNotFound, fmt.Errorf("%s %q not found%s", strings.ToLower(kind), name, where))
		return
	}
	writeJSON(w, list)
}

func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	n, err := a.members.Join(req.Addresses)
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	a.setJoined()
	writeJSON(w, api.JoinResponse{Contacted: n})
}

// podID identifies one attachment in the allocator: container ID and
// interface name; splitPodID reads them back.
func podID(req api.CNIRequest) string { return req.ContainerID + "/" + req.IfName }

func splitPodID(id string) (containerID, ifName string, ok bool) {
	i := strings.LastIndex(id, "/")
	if i < 0 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

func (a *Agent) cniAnswer(p netip.Prefix) api.CNIResponse {
	return api.CNIResponse{
		IP:      p.String(),
		Gateway: ipam.Gateway(p.Masked()).String(),
		MTU:     a.cfg.mtu,
		Bridge:  a.cfg.Bridge,
		Cluster: a.cfg.cidr.String(),
	}
}

// waitAllocator waits (bounded) for the node to have a subnet and allocator.
func (a *Agent) waitAllocator(ctx context.Context) (*ipam.Allocator, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		al, serr := a.alloc.Load(), a.hub.Local().SubnetErr
		if al != nil && a.ready.Load() {
			return al, nil
		}
		select {
		case <-ctx.Done():
			if serr != "" {
				return nil, fmt.Errorf("this node has no pod subnet yet: %s", serr)
			}
			return nil, errors.New("this node has no pod subnet yet (it is still joining); try again shortly")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) handleCNIAdd(w http.ResponseWriter, r *http.Request) {
	var req api.CNIRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if req.ContainerID == "" || req.IfName == "" {
		writeErr(w, http.StatusBadRequest, errors.New("CNI ADD needs a container ID and an interface name"))
		return
	}
	al, err := a.waitAllocator(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	ns, name := req.PodNamespace, req.PodName
	if name == "" {
		ns, name = "default", req.ContainerID
	}
	if ns == "" {
		ns = "default"
	}
	if a.kube != nil {
		// The pod's labels decide its policies: it is attached only once
		// they are known, never unfiltered.
		if req.PodName == "" {
			writeErr(w, http.StatusBadRequest, errors.New("CNI ADD without K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS: in Kubernetes mode netloom needs them to find the pod's labels"))
			return
		}
		if err := a.kube.WaitPod(r.Context(), ns, name, req.PodUID, podWait); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	p, err := al.Allocate(podID(req), ns+"/"+name)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("allocate a pod address: %w", err))
		return
	}
	pa := cluster.PodAddress{Node: a.cfg.Name, IP: p.Addr().String(), ContainerID: req.ContainerID, IfName: req.IfName, UID: req.PodUID}
	key := store.Key{Namespace: ns, Name: name}
	put, err := cluster.PodAddresses.Put(key, pa)
	if err == nil {
		_, err = a.repl.Apply([]store.Put{put}, nil)
	}
	if err != nil {
		_, _, _ = al.Release(podID(req))
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("register pod %s/%s: %w", ns, name, err))
		return
	}
	registered := time.Now() // after the store holds the pod
	a.hub.Kick()
	// The pod gets its address only once its policies (and services) are in
	// the kernel: it must never send or receive a packet unfiltered.
	wctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	err = a.fwc.WaitProgrammed(wctx, registered)
	cancel()
	if err != nil {
		_, _, _ = al.Release(podID(req))
		_, _ = a.repl.Apply(nil, []store.Key{{Kind: cluster.KindPodAddress, Namespace: ns, Name: name}})
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("pod %s/%s: network policy for it is not programmed yet (%v); try again", ns, name, err))
		return
	}
	a.log.Info("pod attached", "pod", ns+"/"+name, "ip", p.Addr(), "container", req.ContainerID)
	a.events.Add(events.PodAttached, ns+"/"+name, fmt.Sprintf("pod %s/%s attached with %s", ns, name, p.Addr()))
	writeJSON(w, a.cniAnswer(p))
}

func (a *Agent) handleCNIDel(w http.ResponseWriter, r *http.Request) {
	var req api.CNIRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if al := a.alloc.Load(); al != nil {
		if _, _, err := al.Release(podID(req)); err != nil {
			writeErr(w, http.StatusInternalServerError, fmt.Errorf("release pod address: %w", err))
			return
		}
	}
	// Drop the pod's registration if it is this attachment's.
	var dels []store.Key
	for _, pa := range cluster.PodAddresses.List(a.store, "") {
		if pa.Value.Node == a.cfg.Name && pa.Value.ContainerID == req.ContainerID && pa.Value.IfName == req.IfName {
			dels = append(dels, pa.Key)
		}
	}
	if len(dels) > 0 {
		if _, err := a.repl.Apply(nil, dels); err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		a.log.Info("pod detached", "container", req.ContainerID)
		a.events.Add(events.PodDetached, dels[0].Namespace+"/"+dels[0].Name, "pod "+dels[0].Namespace+"/"+dels[0].Name+" detached")
	}
	writeJSON(w, map[string]string{"result": "ok"})
}

func (a *Agent) handleCNICheck(w http.ResponseWriter, r *http.Request) {
	var req api.CNIRequest
	if err := decode(w, r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	al := a.alloc.Load()
	if al == nil {
		writeErr(w, http.StatusServiceUnavailable, errors.New("this node has no pod subnet yet; try again shortly"))
		return
	}
	p, ok := al.Lookup(podID(req))
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("container %s interface %s has no address from netloom", req.ContainerID, req.IfName))
		return
	}
	writeJSON(w, a.cniAnswer(p))
}

// handleEvents lists the recent events; with ?follow=1 it then streams new
// ones as JSON lines until the client goes away.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("follow") == "" {
		writeJSON(w, a.events.List())
		return
	}
	past, ch, cancel := a.events.Follow(64)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for _, e := range past {
		_ = enc.Encode(e)
	}
	if flusher != nil {
		flusher.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-ch:
			if err := enc.Encode(e); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}
