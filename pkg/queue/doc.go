// Package queue is kubehistory's only door to NATS JetStream, the durable hand-off between the stages of
// the data path: ingest (and the reconciler) publish accepted changes to stream KUBEHISTORY_CHANGES, the
// Git writers consume them and publish committed records to KUBEHISTORY_HISTORY, which every replica's
// index consumes; the writers' RepoStatus travels in the KV bucket KUBEHISTORY_REPOSTATUS.
//
// It runs JetStream embedded in the process (StartEmbedded, the single-replica default) or connects to an
// external NATS cluster (Connect); both give a Conn, on which everything else happens:
//
//   - EnsureStreams declares the two streams (retention, duplicate window, replicas).
//   - Publisher publishes batches of changes for ingest and the reconciler; it fails at once while
//     disconnected, so the audit webhook can answer 503. Conn.Publish publishes records (and the
//     writers' orphan deletes). Both succeed only when every message is stored, deduplicated by its ID.
//   - Conn.Consumer gives a durable Consumer of a stream or subject: Fetch a batch of Msgs, each settled
//     with Ack, Nak, NakWithDelay, InProgress or Term and carrying its stream sequence, delivery count and
//     message ID; Backlog says how far behind it is and since when (the oldest unacknowledged message).
//     KeepInProgress holds messages while a long piece of work runs. The consumer side is generic: the Git
//     writers and the index use it, and so can any later source or sink.
//   - Conn.Replay reads a stream in order without leaving a consumer behind (index rebuild).
//   - Conn.Status is the StatusKV of the writers' RepoStatus: get, put, delete, list, watch.
//
// The NATS details live here and nowhere else: AckWait, max deliver, max ack pending, the fetch wait, the
// durable consumer names (ChangesConsumerName, HistoryConsumerName), the duplicate window, the async
// publish limits and timeouts. The packages that consume declare small interfaces in these types
// (gitwriter.Queue, follow.Source), so they can be tested against a fake. No other package imports nats
// (only tests that start a server or compare with a bare client).
package queue
