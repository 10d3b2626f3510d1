package framework

// Args is the replica's command line (the binary first), for tools that take the same flags, such as
// `kubehistory-apiserver index rebuild`.
func (r *Replica) Args() []string {
	return append([]string(nil), r.args...)
}
