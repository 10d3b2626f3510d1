// Package index is each replica's local materialized view of the history: a bbolt file fed with the
// committed records of stream KUBEHISTORY_HISTORY (or rebuilt from Git trailers). The history API reads
// only from here, so it never blocks on NATS or Git. The stream sequence of a record is its index
// sequence and the resourceVersion the API shows, so every replica agrees on resourceVersions.
package index

import (
	"encoding/binary"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// Entry is one indexed change: the record with the name and sequence the API serves it under.
type Entry struct {
	// Seq is the index sequence (the KUBEHISTORY_HISTORY stream sequence).
	Seq uint64 `json:"seq"`
	// Name is the API object name; names sort by change time.
	Name string `json:"name"`
	// Record is the committed change.
	Record change.Record `json:"record"`
}

// Namespace is the namespace the entry is served in: the object's namespace, empty for cluster changes.
func (e *Entry) Namespace() string {
	if e.Record.Cluster {
		return ""
	}
	return e.Record.Object.Namespace
}

// Index is a bbolt-backed history index. Safe for concurrent use.
type Index struct {
	db *bolt.DB

	// mu guards subs, the watchers' subscriptions that Add notifies.
	mu   sync.Mutex
	subs map[*Subscription]struct{}

	// recent keeps the newest entries decoded (recent.go).
	recent *recentCache

	// repos feeds RepoStatus watchers (repostatus.go).
	repos *repoFeed
}

// EntryName is the API name of a record: its change time, then a prefix of its change ID, so names sort
// by time and are the same on every replica and after a rebuild.
func EntryName(rec *change.Record) string {
	id := rec.ChangeID
	if len(id) > 10 {
		id = id[:10]
	}
	return rec.ChangeTime.UTC().Format("20060102-150405.000000") + "-" + id
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// scopeKey is the prefix of a scope in the secondary indexes. Namespace and object names cannot hold
// "/", so one scope's prefix is never the prefix of another's.
func scopeKey(cluster bool, namespace string) []byte {
	if cluster {
		return []byte("c/")
	}
	return []byte("n/" + namespace + "/")
}

func objectKey(cluster bool, namespace, objectName string) []byte {
	return append(scopeKey(cluster, namespace), objectName+"/"...)
}

func nameKey(cluster bool, namespace, name string) []byte {
	scope := "n/" + namespace
	if cluster {
		scope = "c/"
	}
	return []byte(scope + "/" + name)
}
