//go:build !kubehistory_fault_ack_on_fetch

package gitwriter

// faultAckOnFetch is the broken-idempotency switch of the reliability suite's negative run; false in
// every normal build.
const faultAckOnFetch = false
