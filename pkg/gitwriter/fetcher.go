package gitwriter

import (
	"context"
	"encoding/json"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// ObjectFetcher reads an object's current state from the API server, for changes whose audit event
// carried no body (Metadata audit level, aggregated APIs).
type ObjectFetcher interface {
	// Get returns the object as JSON; found is false when it does not exist (any more).
	Get(ctx context.Context, group, version, resource, namespace, name string) (body []byte, found bool, err error)
}

// DynamicFetcher is an ObjectFetcher over a client-go dynamic client.
type DynamicFetcher struct {
	Client dynamic.Interface
}

var _ ObjectFetcher = DynamicFetcher{}

// Get implements ObjectFetcher.
func (f DynamicFetcher) Get(ctx context.Context, group, version, resource, namespace, name string) ([]byte, bool, error) {
	ri := f.Client.Resource(schema.GroupVersionResource{Group: group, Version: version, Resource: resource})
	var r dynamic.ResourceInterface = ri
	if namespace != "" {
		r = ri.Namespace(namespace)
	}
	obj, err := r.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsGone(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	b, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}
