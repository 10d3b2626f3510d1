//go:build kubehistory_fault_keep_noop

package ingest

// faultKeepNoOp makes ingest record writes that persisted nothing: the build that `make
// test-matrix-broken` runs the write matrix against, to show that the matrix catches no-op entries.
const faultKeepNoOp = true
