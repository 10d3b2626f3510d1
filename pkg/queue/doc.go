// Package queue is kubehistory's only door to NATS JetStream, the durable hand-off between the stages of
// the data path: ingest (and the reconciler) publish accepted changes to stream KUBEHISTORY_CHANGES, the
// Git writers consume them and publish committed records to KUBEHISTORY_HISTORY, which every replica's
// index consumes.
//
// It runs JetStream embedded in the process (StartEmbedded, the single-replica default) or connects to an
// external NATS cluster (Connect), declares the two streams (EnsureStreams), and publishes batches of
// changes whose success means "every message is stored" (Publisher). No other package imports nats.
package queue
