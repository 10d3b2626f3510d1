// Package access is the RBAC mirror of the history API: a change is shown only to a user who may `get`
// the changed object's resource in the object's namespace (cluster scope for cluster objects), as
// decided by the server's delegated authorizer (SubjectAccessReview against kube-apiserver), so history
// never shows what RBAC hides. Being allowed to list resourcechanges is necessary, not sufficient.
package access

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kubehistory/kubehistory/pkg/change"
)

const (
	// DefaultTTL is how long a decision is reused: a revoked permission stops showing history (in lists
	// and in running watches) at most this long after kube-apiserver stops allowing it.
	DefaultTTL = 10 * time.Second
	// DefaultCacheSize bounds the decisions kept (least recently used go first).
	DefaultCacheSize = 10000
)

// Mirror decides, per user and changed object, whether the user may see the change.
type Mirror struct {
	authz     authorizer.Authorizer
	ttl       time.Duration
	decisions *cache.LRUExpireCache
}

// New returns a mirror over the authorizer that caches decisions for ttl, at most size of them.
func New(authz authorizer.Authorizer, ttl time.Duration, size int) *Mirror {
	return &Mirror{authz: authz, ttl: ttl, decisions: cache.NewLRUExpireCache(size)}
}

// MayGet reports whether u may `get` the resource of the record's object in its namespace. Errors of the
// authorizer (kube-apiserver unreachable) are returned, not taken as a denial, so that a list does not
// silently come back short; they are not cached.
func (m *Mirror) MayGet(ctx context.Context, u user.Info, rec *change.Record) (bool, error) {
	attrs := authorizer.AttributesRecord{
		User:            u,
		Verb:            "get",
		APIGroup:        rec.Object.Group,
		APIVersion:      rec.Object.Version,
		Resource:        rec.Object.Resource,
		ResourceRequest: true,
	}
	if !rec.Cluster {
		attrs.Namespace = rec.Object.Namespace
	}
	return m.decide(ctx, attrs)
}

// MayGetNamed reports whether u may `get` the named object of group/resource in namespace: a
// RepoStatus is shown only to those who may get its GitDestination (resourceNames rules count).
func (m *Mirror) MayGetNamed(ctx context.Context, u user.Info, group, resource, namespace, name string) (bool, error) {
	return m.decide(ctx, authorizer.AttributesRecord{
		User: u, Verb: "get", APIGroup: group, Resource: resource, Namespace: namespace, Name: name, ResourceRequest: true,
	})
}

func (m *Mirror) decide(ctx context.Context, attrs authorizer.AttributesRecord) (bool, error) {
	u := attrs.User
	key := cacheKey(&attrs)
	if v, ok := m.decisions.Get(key); ok {
		return v.(bool), nil
	}
	decision, _, err := m.authz.Authorize(ctx, attrs)
	allowed := decision == authorizer.DecisionAllow
	if err != nil && !allowed {
		return false, fmt.Errorf("authorizing %s to get %s.%s in %q: %w", u.GetName(), attrs.Resource, attrs.APIGroup, attrs.Namespace, err)
	}
	m.decisions.Add(key, allowed, m.ttl)
	return allowed, nil
}

// cacheKey identifies a decision: everything of the user the authorizer may look at (name, uid, groups,
// extra, such as a token's scopes) and the request attributes. The version is left out: RBAC does not
// look at it.
func cacheKey(a *authorizer.AttributesRecord) string {
	var b strings.Builder
	field := func(s string) {
		b.WriteString(s)
		b.WriteByte(0)
	}
	field(a.User.GetName())
	field(a.User.GetUID())
	groups := append([]string(nil), a.User.GetGroups()...)
	sort.Strings(groups)
	field(strings.Join(groups, "\x01"))
	extra := a.User.GetExtra()
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field(k + "=" + strings.Join(extra[k], "\x01"))
	}
	field(a.Verb)
	field(a.APIGroup)
	field(a.Resource)
	field(a.Namespace)
	field(a.Name)
	return b.String()
}
