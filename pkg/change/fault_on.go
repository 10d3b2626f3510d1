//go:build kubehistory_fault_unredacted

package change

// faultUnredacted makes RedactBody publish bodies as received: the build that `make test-leak-broken`
// runs the leak scan against, to show that the scan catches an unredacted body.
const faultUnredacted = true
