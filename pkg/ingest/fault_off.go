//go:build !kubehistory_fault_keep_noop

package ingest

const faultKeepNoOp = false
