package changes

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/storage"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func record(seq uint64, group, resource, ns, name string) change.Record {
	return change.Record{Cluster: ns == "", Fields: change.Fields{
		Object:     change.Object{Group: group, Version: "v1", Resource: resource, Namespace: ns, Name: name},
		Verb:       change.VerbUpdate,
		Actor:      change.Actor{Username: "alice"},
		Source:     change.SourceAudit,
		ChangeID:   fmt.Sprintf("change-%06d", seq),
		ChangeTime: metav1.NewMicroTime(t0.Add(time.Duration(seq) * time.Second)),
	}}
}

// newIndex returns an index holding n ConfigMap changes in team-a, at sequences 1..n.
func newIndex(t *testing.T, n int) *index.Index {
	t.Helper()
	x, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	for seq := uint64(1); seq <= uint64(n); seq++ {
		add(t, x, seq, record(seq, "", "configmaps", "team-a", fmt.Sprintf("cm-%d", seq%7)))
	}
	return x
}

func add(t *testing.T, x *index.Index, seq uint64, rec change.Record) {
	t.Helper()
	if _, err := x.Add(seq, rec); err != nil {
		t.Fatal(err)
	}
}

func nsCtx(ns string) context.Context {
	return userCtx(ns, "admin")
}

func userCtx(ns, name string) context.Context {
	return genericapirequest.WithUser(genericapirequest.WithNamespace(context.Background(), ns), &user.DefaultInfo{Name: name})
}

// allowAll lets every user see every change.
type allowAll struct{}

func (allowAll) MayGet(context.Context, user.Info, *change.Record) (bool, error) { return true, nil }

func listPage(t *testing.T, r *REST, ctx context.Context, opts *metainternalversion.ListOptions) (*history.ResourceChangeList, error) {
	t.Helper()
	obj, err := r.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	return obj.(*history.ResourceChangeList), nil
}

func TestContinueTokenRoundTrip(t *testing.T) {
	for _, tc := range []struct{ last, rv uint64 }{{1, 1}, {41, 100}, {1 << 40, 1<<40 + 7}} {
		tok, err := encodeContinue(tc.last, tc.rv)
		if err != nil {
			t.Fatal(err)
		}
		last, rv, err := decodeContinue(tok)
		if err != nil || last != tc.last || rv != tc.rv {
			t.Errorf("decode(encode(%d, %d)) = %d, %d, %v", tc.last, tc.rv, last, rv, err)
		}
		// The apiserver's own decoder reads it: the same encoding as etcd-backed resources.
		if key, rv, err := storage.DecodeContinue(tok, continuePrefix); err != nil || rv != int64(tc.rv) || key != fmt.Sprintf("%s%d", continuePrefix, tc.last) {
			t.Errorf("storage.DecodeContinue = %q, %d, %v", key, rv, err)
		}
	}
}

func TestPagingIsAnExactSnapshot(t *testing.T) {
	x := newIndex(t, 95)
	r := NewResourceChanges(x, allowAll{})
	ctx := nsCtx("team-a")
	seen := map[string]int{}
	var snapshot string
	opts := &metainternalversion.ListOptions{Limit: 10}
	pages := 0
	for {
		list, err := listPage(t, r, ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if snapshot == "" {
			snapshot = list.ResourceVersion
		} else if list.ResourceVersion != snapshot {
			t.Errorf("page %d at resourceVersion %s, first page at %s", pages, list.ResourceVersion, snapshot)
		}
		if list.RemainingItemCount != nil {
			t.Errorf("remainingItemCount set: %d", *list.RemainingItemCount)
		}
		for _, it := range list.Items {
			seen[it.Name]++
		}
		// New changes arrive between pages; the page set must not show them.
		seq := uint64(1000 + pages)
		add(t, x, seq, record(seq, "", "configmaps", "team-a", "late"))
		if list.Continue == "" {
			break
		}
		if len(list.Items) != 10 {
			t.Errorf("page %d has %d items", pages, len(list.Items))
		}
		opts = &metainternalversion.ListOptions{Limit: 10, Continue: list.Continue}
	}
	if len(seen) != 95 || pages != 10 {
		t.Errorf("%d distinct items in %d pages, want 95 in 10", len(seen), pages)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", name, n)
		}
	}
	// A selector pages too, and the last page has no token even when non-matching entries follow.
	sel := &metainternalversion.ListOptions{Limit: 5, FieldSelector: fields.OneTermEqualSelector("object.name", "cm-3")}
	total := 0
	for {
		list, err := listPage(t, r, ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		total += len(list.Items)
		if list.Continue == "" {
			break
		}
		sel.Continue = list.Continue
	}
	if total != 14 { // 3, 10, ..., 94
		t.Errorf("object.name=cm-3 over pages: %d items, want 14", total)
	}
}

func TestPagingErrors(t *testing.T) {
	x := newIndex(t, 30)
	r := NewResourceChanges(x, allowAll{})
	ctx := nsCtx("team-a")
	first, err := listPage(t, r, ctx, &metainternalversion.ListOptions{Limit: 10})
	if err != nil || first.Continue == "" {
		t.Fatalf("first page: %v %v", first, err)
	}
	future, _ := encodeContinue(10, 500)
	cases := []struct {
		name, token string
		is          func(error) bool
	}{
		{"not base64", "%%%", apierrors.IsBadRequest},
		{"not JSON", base64.RawURLEncoding.EncodeToString([]byte("{oops")), apierrors.IsBadRequest},
		{"not a sequence", base64.RawURLEncoding.EncodeToString([]byte(`{"v":"meta.k8s.io/v1","rv":30,"start":"x"}`)), apierrors.IsBadRequest},
		{"start past its snapshot", base64.RawURLEncoding.EncodeToString([]byte(`{"v":"meta.k8s.io/v1","rv":3,"start":"9"}`)), apierrors.IsBadRequest},
		{"path traversal", base64.RawURLEncoding.EncodeToString([]byte(`{"v":"meta.k8s.io/v1","rv":30,"start":"../9"}`)), apierrors.IsBadRequest},
		{"unknown version", base64.RawURLEncoding.EncodeToString([]byte(`{"v":"x/v9","rv":30,"start":"9"}`)), apierrors.IsBadRequest},
		{"snapshot this replica has not reached", future, storage.IsTooLargeResourceVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.List(ctx, &metainternalversion.ListOptions{Limit: 10, Continue: tc.token})
			if !tc.is(err) {
				t.Errorf("got %v", err)
			}
		})
	}
	// Retention removes entries the page set still has to show: 410, never a silent skip.
	if _, err := x.Compact(15); err != nil {
		t.Fatal(err)
	}
	if _, err := r.List(ctx, &metainternalversion.ListOptions{Limit: 10, Continue: first.Continue}); !apierrors.IsResourceExpired(err) {
		t.Errorf("continue below the retention: want 410 Expired, got %v", err)
	}
	// A token at the retention mark is still exact.
	atMark, _ := encodeContinue(15, 30)
	if list, err := listPage(t, r, ctx, &metainternalversion.ListOptions{Limit: 10, Continue: atMark}); err != nil || len(list.Items) != 10 || list.Items[0].ResourceVersion != "16" {
		t.Errorf("continue at the retention mark: %v %v", list, err)
	}
	exact, err := listPage(t, r, ctx, &metainternalversion.ListOptions{ResourceVersion: "20", ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if err != nil || len(exact.Items) != 5 || exact.ResourceVersion != "20" {
		t.Errorf("exact snapshot 20: %v %v", exact, err)
	}
	if _, err := r.List(ctx, &metainternalversion.ListOptions{ResourceVersion: "10", ResourceVersionMatch: metav1.ResourceVersionMatchExact}); !apierrors.IsResourceExpired(err) {
		t.Errorf("exact snapshot below the retention: want 410, got %v", err)
	}
	// Not older than a resourceVersion: the latest state, unless this index has not reached it.
	if list, err := listPage(t, r, ctx, &metainternalversion.ListOptions{ResourceVersion: "12"}); err != nil || list.ResourceVersion != "30" {
		t.Errorf("list not older than 12: %v %v", list, err)
	}
	if _, err := r.List(ctx, &metainternalversion.ListOptions{ResourceVersion: "31", ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}); !storage.IsTooLargeResourceVersion(err) {
		t.Errorf("list not older than 31 from an index at 30: want too large, got %v", err)
	}
	if _, err := r.List(ctx, &metainternalversion.ListOptions{ResourceVersion: "x"}); !apierrors.IsBadRequest(err) {
		t.Errorf("resourceVersion x: want 400, got %v", err)
	}
}

// TestListThroughSecondaryIndexes lists through the REST layer with the selectors that pick an index,
// and checks the answers against the matcher alone.
func TestListThroughSecondaryIndexes(t *testing.T) {
	x := newIndex(t, 40)
	for seq := uint64(41); seq <= 60; seq++ {
		add(t, x, seq, record(seq, "", "secrets", "team-b", fmt.Sprintf("cm-%d", seq%7)))
	}
	r := NewResourceChanges(x, allowAll{})
	cases := []struct {
		name, ns, field string
		want            int
	}{
		{"object in a namespace", "team-a", "object.name=cm-3", 6},
		{"object across namespaces", "", "object.name=cm-3", 9},
		{"object and namespace across namespaces", "", "object.name=cm-3,object.namespace=team-b", 3},
		{"namespace across namespaces", "", "metadata.namespace=team-b", 20},
		{"object and resource", "", "object.name=cm-3,object.resource=configmaps", 6},
		{"conflicting namespaces", "team-a", "object.namespace=team-b", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := fields.ParseSelector(tc.field)
			if err != nil {
				t.Fatal(err)
			}
			list, err := listPage(t, r, nsCtx(tc.ns), &metainternalversion.ListOptions{FieldSelector: sel})
			if err != nil || len(list.Items) != tc.want {
				t.Fatalf("got %d items, %v; want %d", len(list.Items), err, tc.want)
			}
			for _, it := range list.Items {
				if !sel.Matches(fields.Set{"object.name": it.Object.Name, "object.namespace": it.Object.Namespace, "metadata.namespace": it.Namespace, "object.resource": it.Object.Resource}) {
					t.Errorf("%s does not match %s", it.Name, tc.field)
				}
			}
		})
	}
}

func indexOptions(ns string) index.ListOptions { return index.ListOptions{Namespace: ns} }
