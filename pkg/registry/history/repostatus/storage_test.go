package repostatus

import (
	"testing"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
)

// The storage format names its limits and reasons without importing the API; they must say what the
// API documents.
func TestStorageConstantsMatchAPI(t *testing.T) {
	if change.MaxOrphans != historyv1alpha1.MaxOrphansListed {
		t.Errorf("change.MaxOrphans = %d, API documents %d", change.MaxOrphans, historyv1alpha1.MaxOrphansListed)
	}
	if change.OrphanObjectGone != string(historyv1alpha1.OrphanObjectGone) || change.OrphanOutOfScope != string(historyv1alpha1.OrphanOutOfScope) {
		t.Error("orphan reasons of the storage format differ from the API's")
	}
}
