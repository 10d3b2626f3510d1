package gitwriter

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
)

// StatusBucket is the JetStream KV bucket holding one RepoStatus per destination, so that every
// replica's history API serves the status of writers that run elsewhere.
const StatusBucket = "KUBEHISTORY_REPOSTATUS"

// Condition types and reasons of RepoStatus written by the writer.
const (
	ConditionReady    = "Ready"
	ReasonPushed      = "Pushed"
	ReasonWaiting     = "WaitingForChanges"
	ReasonWriteFailed = "WriteFailed"
	ReasonStarting    = "Starting"
	// ConditionSynced says whether Git equals the cluster for the tracked scope after the last orphan
	// check of the reconciler.
	ConditionSynced     = "Synced"
	ReasonInSync        = "InSync"
	ReasonOrphansFound  = "OrphansFound"
	ReasonOrphansPruned = "OrphansPruned"
	// Reasons of RepoStatus.orphans entries.
	OrphanReasonObjectGone = "ObjectGone"
	OrphanReasonOutOfScope = "OutOfScope"
	statusDescription      = "kubehistory Git writer status, one key per GitDestination (<namespace>.<name>)"
)

// StatusKey is the KV key of a destination's RepoStatus.
func StatusKey(ref change.DestinationRef) string {
	return ref.Namespace + "." + ref.Name
}

// StatusBucketKV opens (creating it when missing) the RepoStatus bucket.
func StatusBucketKV(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, StatusBucket)
	if err == nil {
		return kv, nil
	}
	kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StatusBucket, History: 1, Description: statusDescription})
	if err != nil {
		return nil, fmt.Errorf("gitwriter: opening KV bucket %s: %w", StatusBucket, err)
	}
	return kv, nil
}

// ReadRepoStatus returns the RepoStatus of a destination as its writer last stored it. The error
// wraps jetstream.ErrKeyNotFound when no writer has run for it yet.
func ReadRepoStatus(ctx context.Context, kv jetstream.KeyValue, ref change.DestinationRef) (historyv1alpha1.RepoStatus, error) {
	var st historyv1alpha1.RepoStatus
	e, err := kv.Get(ctx, StatusKey(ref))
	if err != nil {
		return st, fmt.Errorf("gitwriter: reading status of %s: %w", ref, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("gitwriter: decoding status of %s: %w", ref, err)
	}
	st.Name, st.Namespace = ref.Name, ref.Namespace
	return st, nil
}

func writeRepoStatus(ctx context.Context, kv jetstream.KeyValue, ref change.DestinationRef, st *historyv1alpha1.RepoStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, StatusKey(ref), b)
	return err
}
