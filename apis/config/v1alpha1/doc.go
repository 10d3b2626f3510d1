// Package v1alpha1 is config.kubehistory.io/v1alpha1: the CRDs that scope kubehistory (WatchRule,
// ClusterWatchRule) and say where history goes (GitDestination). They are stored in etcd by
// kube-apiserver; kubehistory reads them through informers.
//
// +k8s:deepcopy-gen=package
// +kubebuilder:object:generate=false
// +groupName=config.kubehistory.io
package v1alpha1
