// Package v1alpha1 is the v1alpha1 version of history.kubehistory.io: ResourceChange,
// ClusterResourceChange and RepoStatus, served read-only by kubehistory-apiserver.
//
// +k8s:openapi-gen=true
// +k8s:deepcopy-gen=package
// +k8s:protobuf-gen=package
// +k8s:conversion-gen=github.com/kubehistory/kubehistory/apis/history
// +k8s:defaulter-gen=TypeMeta
// +groupName=history.kubehistory.io
// +k8s:openapi-model-package=io.kubehistory.history.v1alpha1
package v1alpha1
