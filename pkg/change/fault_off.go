//go:build !kubehistory_fault_unredacted

package change

const faultUnredacted = false
