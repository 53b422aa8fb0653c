package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/netloom/netloom/cluster"
	"github.com/netloom/netloom/lb"
	"github.com/netloom/netloom/mesh/objects"
)

// stampCreated sets cluster.CreatedAnnotation on a Service being applied: kept from
// the stored object when there is one, else now at this node.
func stampCreated(obj json.RawMessage, old json.RawMessage, exists bool, node string) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	stamp := fmt.Sprintf("%d@%s", time.Now().UnixMilli(), node)
	if exists {
		if svc, err := objects.DecodeService(old); err == nil && svc.Annotations[cluster.CreatedAnnotation] != "" {
			stamp = svc.Annotations[cluster.CreatedAnnotation]
		}
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	if _, given := ann[cluster.CreatedAnnotation]; !given {
		ann[cluster.CreatedAnnotation] = stamp
	}
	return json.Marshal(m)
}

// validateServices checks a manifest's services and address pools against
// the store (a requested VIP outside every pool or already in use, pools
// overlapping each other or the cluster CIDR); the error names the
// document.
func (a *Agent) validateServices(objs []objects.Object) error {
	var in lb.Snapshot
	docOf := map[string]int{}
	for i, o := range objs {
		switch o.Kind {
		case "Service":
			svc, err := objects.DecodeService(o.JSON)
			if err != nil {
				return err
			}
			s, err := objects.LBService(svc)
			if err != nil {
				return err
			}
			in.Services = append(in.Services, s)
		case "AddressPool":
			ap, err := objects.DecodeAddressPool(o.JSON)
			if err != nil {
				return err
			}
			p, err := ap.LBPool()
			if err != nil {
				return err
			}
			in.Pools = append(in.Pools, p)
		default:
			continue
		}
		docOf[o.Kind+"/"+o.Namespace+"/"+o.Name] = i + 1
	}
	if len(in.Services) == 0 && len(in.Pools) == 0 {
		return nil
	}
	cur := a.hub.Latest()
	err := lb.ValidateApply(a.lbConfig(), lb.Snapshot{Services: cur.Services, Pools: cur.Pools}, in)
	if err == nil {
		return nil
	}
	var fe *lb.FieldError
	if errors.As(err, &fe) {
		if n, ok := docOf[fe.Kind+"/"+fe.Namespace+"/"+fe.Name]; ok {
			what := fe.Kind + " " + fe.Name
			if fe.Namespace != "" {
				what = fe.Kind + " " + fe.Namespace + "/" + fe.Name
			}
			return fmt.Errorf("document %d (%s): %s: %s", n, what, fe.Field, fe.Msg)
		}
	}
	return err
}
