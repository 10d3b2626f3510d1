// Package history is the internal version of the history.kubehistory.io API group: the read-only records
// of changes that the aggregated server serves from its index.
//
// +k8s:deepcopy-gen=package
// +groupName=history.kubehistory.io
package history
