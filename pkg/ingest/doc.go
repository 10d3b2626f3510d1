// Package ingest is the first stage of kubehistory's data path: the audit webhook that kube-apiserver
// sends its audit.k8s.io/v1 EventLists to, over mutual TLS.
//
// For every event it decides whether the request persisted a change of a tracked object (completed,
// mutating, successful, not a dry-run, not kubehistory's own API, matched by a WatchRule or
// ClusterWatchRule), turns each changed object into one change.Change per destination, and publishes the
// batch through a Publisher (JetStream in production). It answers 200 only once every message is
// acknowledged and 503 otherwise, so that kube-apiserver keeps the batch and retries: together with
// message IDs derived from auditID and object, nothing answered 200 is lost and nothing is recorded
// twice.
package ingest
