package index

import kjson "sigs.k8s.io/json"

// decodeEntry decodes an entry of the index file and brings its record to the current storage version
// (change.Record.Upgrade). The file's schema (Open) says which entry layout it holds; the record inside
// says its own version.
//
// Entries are written with encoding/json and read with sigs.k8s.io/json, the decoder Kubernetes uses
// (encoding/json's, case-sensitive): a list decodes every entry it reads that the recent cache does
// not hold. It replaced json-iterator, which Kubernetes dropped; json-iterator decoded an entry in
// ~60 % of the time, encoding/json takes ~10 % longer than sigs.k8s.io/json (BenchmarkDecodeEntry,
// docs/decisions.md).
func decodeEntry(data []byte, e *Entry) error {
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, e); err != nil {
		return err
	}
	return e.Record.Upgrade()
}

// decodeEntryKeys decodes an entry for the index's own upkeep (Compact, retention, adding secondary
// indexes), which reads only its keys and time: without Upgrade, so that one entry written by a newer
// build (after a downgrade) does not stop every retention pass and compaction. Serving goes through
// decodeEntry, which refuses such an entry.
func decodeEntryKeys(data []byte, e *Entry) error {
	return kjson.UnmarshalCaseSensitivePreserveInts(data, e)
}
