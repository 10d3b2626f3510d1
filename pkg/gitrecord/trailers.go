package gitrecord

import "strings"

// Trailers written in every commit. Git is the source of truth: the writer's journal is only a cache
// of what these trailers say, rebuilt from them when it is missing or behind; the index rebuilt from
// Git reads its records from them.
const (
	// TrailerChangeID carries one change ID; one line per change committed.
	TrailerChangeID = "Kubehistory-Change-Id"
	// TrailerAuditID carries the audit IDs of the commit's changes.
	TrailerAuditID = "Kubehistory-Audit-Id"
	// TrailerActorGroups carries the groups of the actor (the commit's author).
	TrailerActorGroups = "Kubehistory-Actor-Groups"
	// TrailerObjectVersion is "<path> <resourceVersion>[ deleted]" for every file the commit wrote or
	// removed: the per-object resourceVersion guard survives the loss of the data directory.
	TrailerObjectVersion = "Kubehistory-Object-Version"
	// TrailerMarker is "<change ID> <marker>" for the markers the writer itself added
	// (FetchedAtWriteTime, ObjectGone), so a record rebuilt from Git carries them too.
	TrailerMarker = "Kubehistory-Marker"
)

// ObjectVersion is the state a commit wrote for one path: the object's resourceVersion ("" when
// unknown) and whether the file was removed.
type ObjectVersion struct {
	RV      string `json:"rv,omitempty"`
	Deleted bool   `json:"d,omitempty"`
}

// Trailers are what a kubehistory commit message records besides its subject.
type Trailers struct {
	// IDs are the change IDs the commit recorded.
	IDs []string
	// AuditIDs are the audit IDs of those changes (audit changes only).
	AuditIDs []string
	// ActorGroups are the author's groups.
	ActorGroups []string
	// Versions are the resourceVersion (or deletion) each file was written at, by path.
	Versions map[string]ObjectVersion
	// Markers are the markers the writer added, by change ID.
	Markers map[string][]string
}

// ParseTrailers reads the trailers of a commit message written by the Git writer; lines that are not
// kubehistory trailers are ignored.
func ParseTrailers(msg string) Trailers {
	t := Trailers{Versions: map[string]ObjectVersion{}, Markers: map[string][]string{}}
	for _, line := range strings.Split(msg, "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case TrailerChangeID:
			t.IDs = append(t.IDs, value)
		case TrailerAuditID:
			t.AuditIDs = append(t.AuditIDs, value)
		case TrailerActorGroups:
			t.ActorGroups = strings.Split(value, ", ")
		case TrailerObjectVersion:
			f := strings.Fields(value)
			if len(f) < 2 {
				continue
			}
			v := ObjectVersion{Deleted: len(f) > 2 && f[2] == "deleted"}
			if f[1] != "-" {
				v.RV = f[1]
			}
			if _, seen := t.Versions[f[0]]; !seen {
				t.Versions[f[0]] = v
			}
		case TrailerMarker:
			if id, m, ok := strings.Cut(value, " "); ok {
				t.Markers[id] = append(t.Markers[id], m)
			}
		}
	}
	return t
}
