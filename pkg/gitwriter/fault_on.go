//go:build kubehistory_fault_ack_on_fetch

package gitwriter

// faultAckOnFetch makes the writer ack every change as soon as it fetches it, before the push: a writer
// killed in its commit window then loses changes. Only `make test-reliability-broken` builds this.
const faultAckOnFetch = true
