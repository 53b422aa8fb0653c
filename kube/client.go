package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/netloom/netloom/kube/manifests"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients are the API clients of one kubeconfig.
type Clients struct {
	Server string
	Kube   API
}

// Connect reads a kubeconfig and makes the clients. It does not contact
// the server. A file that is missing or does not parse is one line naming
// it and the fix.
func Connect(kubeconfig string) (*Clients, error) {
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w: make one for the netloom ServiceAccount as 'netloom k8s manifests' and 'netloom install' describe", kubeconfig, errors.Unwrap(err))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s does not load: %s: fix the file or make it again", kubeconfig, oneLine(err.Error()))
	}
	return ClientsFor(cfg)
}

// ClientsFor makes the clients of a REST config.
func ClientsFor(cfg *rest.Config) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "netloom"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	api, err := NewAPI(cfg)
	if err != nil {
		return nil, fmt.Errorf("Kubernetes client for %s: %s", cfg.Host, oneLine(err.Error()))
	}
	return &Clients{Server: cfg.Host, Kube: api}, nil
}

// Access is one permission netloom needs.
type Access struct {
	Verb, Group, Resource, Subresource string
}

func (a Access) String() string {
	r := a.Resource
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	if a.Group != "" {
		r += "." + a.Group
	}
	return a.Verb + " " + r
}

// Needed is every permission the agent uses: the ClusterRole of
// 'netloom k8s manifests' grants exactly these.
func Needed() []Access {
	var out []Access
	for _, r := range manifests.ClusterRole().Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				name, sub, _ := strings.Cut(res, "/")
				for _, v := range r.Verbs {
					out = append(out, Access{Verb: v, Group: g, Resource: name, Subresource: sub})
				}
			}
		}
	}
	return out
}

// CheckAccess asks the API server, with SelfSubjectAccessReviews, whether
// the credentials hold every permission in need. The error is one line:
// the server cannot be reached, refuses the credentials, or names the
// permissions that are missing and how to grant them.
func CheckAccess(ctx context.Context, c API, server string, need []Access) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var missing []string
	for _, a := range need {
		r := &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.Verb, Group: a.Group, Resource: a.Resource, Subresource: a.Subresource}},
		}
		if err := c.Create(ctx, Ref{Resource: "selfsubjectaccessreviews"}, r, r); err != nil {
			return APIError(server, err)
		}
		if !r.Status.Allowed {
			missing = append(missing, a.String())
		}
	}
	if len(missing) > 0 {
		return &Error{msg: fmt.Sprintf("the API server %s does not let netloom %s: apply the ClusterRole of 'netloom k8s manifests' and bind it to netloom's ServiceAccount", server, strings.Join(missing, ", ")), denied: true}
	}
	return nil
}

// APIError is one line for an error of the API server at server; it wraps
// err (errors.Is and As see the API status).
func APIError(server string, err error) error {
	switch {
	case apierrors.IsUnauthorized(err):
		return &Error{msg: fmt.Sprintf("the API server %s refuses netloom's credentials (401): make a new token for the netloom ServiceAccount and put it in the kubeconfig", server), err: err}
	case apierrors.IsForbidden(err):
		return &Error{msg: fmt.Sprintf("the API server %s forbids it (403): %s: apply the ClusterRole of 'netloom k8s manifests'", server, oneLine(err.Error())), err: err, denied: true}
	}
	return &Error{msg: fmt.Sprintf("the API server %s: %s", server, oneLine(err.Error())), err: err}
}

// Error is an error of the API server as one line.
type Error struct {
	msg string
	err error
	// denied: the server refused netloom (403, or a permission a
	// SelfSubjectAccessReview says it lacks).
	denied bool
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// Denied reports whether err is the API server refusing netloom something.
func Denied(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.denied
}

// Unreachable reports whether err is no answer of the API server at all
// (refused connection, timeout), rather than an answer.
func Unreachable(err error) bool {
	var status apierrors.APIStatus
	return err != nil && !Denied(err) && !errors.As(err, &status) && !errors.Is(err, context.Canceled)
}

// WarmupGrace is how long after the API server was unreachable a refusal
// may be its own start: kube-apiserver answers, even /readyz ok, before its
// RBAC caches have loaded, and until then refuses every request (403) and
// every SelfSubjectAccessReview.
const WarmupGrace = 30 * time.Second

// Warmup tells refusals of an API server that is starting from those its
// RBAC means. The zero value is ready to use.
type Warmup struct{ unreachable time.Time }

// Unreachable records that the server was unreachable at t (seen
// elsewhere, e.g. by a watch).
func (w *Warmup) Unreachable(t time.Time) {
	if t.After(w.unreachable) {
		w.unreachable = t
	}
}

// Starting records err (seen at now) and reports whether it is a refusal
// within WarmupGrace of the server having been unreachable.
func (w *Warmup) Starting(err error, now time.Time) bool {
	if Unreachable(err) {
		w.unreachable = now
		return false
	}
	return Denied(err) && !w.unreachable.IsZero() && now.Sub(w.unreachable) < WarmupGrace
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
