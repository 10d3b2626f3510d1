// Package apiserver assembles the aggregated history API server: a k8s.io/apiserver generic server with
// delegated authentication and authorization that serves history.kubehistory.io read-only from the index.
// It is built in fixed stages: Config → CompletedConfig → HistoryServer.
package apiserver

import (
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/apis/history/install"
	"github.com/kubehistory/kubehistory/pkg/registry"
	"github.com/kubehistory/kubehistory/pkg/registry/access"
	"github.com/kubehistory/kubehistory/pkg/registry/history/changes"
	"github.com/kubehistory/kubehistory/pkg/registry/history/repostatus"
)

var (
	// Scheme holds the history group's internal and versioned types.
	Scheme = runtime.NewScheme()
	// Codecs serializes the history group.
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	install.Install(Scheme)
	// The generic server encodes options and status in the unversioned v1 group.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned,
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{},
	)
}

// Index is what the server reads history from.
type Index interface {
	registry.ChangeReader
	registry.RepoStatusReader
}

// ExtraConfig is kubehistory's own configuration beside the generic server's.
type ExtraConfig struct {
	// Index is the local history index.
	Index Index
	// Authorizer is the server's delegated authorizer (GenericConfig.Authorization.Authorizer); it
	// decides, per user, which changes the history shows (the RBAC mirror, pkg/registry/access).
	Authorizer authorizer.Authorizer
}

// Config is the server's configuration before completion.
type Config struct {
	GenericConfig *genericapiserver.RecommendedConfig
	ExtraConfig   ExtraConfig
}

type completedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
	ExtraConfig   *ExtraConfig
}

// CompletedConfig is a Config with every default filled in; only Complete makes one.
type CompletedConfig struct {
	*completedConfig
}

// HistoryServer is the running history API.
type HistoryServer struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// Complete fills in the fields not set. It mutates the receiver.
func (cfg *Config) Complete() CompletedConfig {
	return CompletedConfig{&completedConfig{GenericConfig: cfg.GenericConfig.Complete(), ExtraConfig: &cfg.ExtraConfig}}
}

// New builds the server and installs the history group.
func (c completedConfig) New() (*HistoryServer, error) {
	genericServer, err := c.GenericConfig.New("kubehistory-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	s := &HistoryServer{GenericAPIServer: genericServer}
	if c.ExtraConfig.Authorizer == nil {
		// Without it every change would be shown to everyone allowed to list the history.
		return nil, errors.New("no authorizer for the history RBAC mirror")
	}
	mirror := access.New(c.ExtraConfig.Authorizer, access.DefaultTTL, access.DefaultCacheSize)

	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(history.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	apiGroupInfo.VersionedResourcesStorageMap["v1alpha1"] = map[string]rest.Storage{
		"resourcechanges":        changes.NewResourceChanges(c.ExtraConfig.Index, mirror),
		"clusterresourcechanges": changes.NewClusterResourceChanges(c.ExtraConfig.Index, mirror),
		"repostatuses":           repostatus.New(c.ExtraConfig.Index, mirror),
	}
	if err := s.GenericAPIServer.InstallAPIGroup(&apiGroupInfo); err != nil {
		return nil, err
	}
	return s, nil
}
