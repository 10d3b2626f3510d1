package changes

import (
	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/change"
)

// convertChange converts a change from its storage format (pkg/change, the records of the streams and
// the index) to the internal API type, which the API server converts to each served version. Storage and
// API evolve apart: a field renamed in a new API version changes this function, not the stored records.
// Slices are shared with in, which the caller owns (a decoded index entry).
func convertChange(in *change.Fields, out *history.Change) {
	out.Object = history.ChangedObject{
		Group:           in.Object.Group,
		Version:         in.Object.Version,
		Resource:        in.Object.Resource,
		Kind:            in.Object.Kind,
		Namespace:       in.Object.Namespace,
		Name:            in.Object.Name,
		UID:             in.Object.UID,
		ResourceVersion: in.Object.ResourceVersion,
	}
	out.Verb = history.ChangeVerb(in.Verb)
	out.Actor = history.Actor{
		Username:  in.Actor.Username,
		UID:       in.Actor.UID,
		Groups:    in.Actor.Groups,
		UserAgent: in.Actor.UserAgent,
		SourceIPs: in.Actor.SourceIPs,
	}
	if im := in.Actor.Impersonator; im != nil {
		out.Actor.Impersonator = &history.Impersonator{Username: im.Username, UID: im.UID, Groups: im.Groups}
	}
	out.Source = history.ChangeSource(in.Source)
	out.AuditID = in.AuditID
	out.ChangeID = in.ChangeID
	out.RequestURI = in.RequestURI
	out.ChangeTime = in.ChangeTime
	out.Git = history.GitLink{
		Destination:          in.Git.Destination,
		DestinationNamespace: in.Git.DestinationNamespace,
		Repository:           in.Git.Repository,
		Branch:               in.Git.Branch,
		Commit:               in.Git.Commit,
		Path:                 in.Git.Path,
		CommittedAt:          in.Git.CommittedAt,
	}
	out.Diff = in.Diff
	out.DiffTruncated = in.DiffTruncated
	out.Markers = nil
	if len(in.Markers) > 0 {
		out.Markers = make([]history.ChangeMarker, len(in.Markers))
		for i, m := range in.Markers {
			out.Markers[i] = history.ChangeMarker(m)
		}
	}
}
