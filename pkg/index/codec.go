package index

import jsoniter "github.com/json-iterator/go"

// entryJSON decodes entries: a list decodes every entry it reads, which is most of its cost, and
// json-iterator does it at about twice the speed of encoding/json for the same struct tags (entries are
// written with encoding/json; both read each other's output).
var entryJSON = jsoniter.ConfigCompatibleWithStandardLibrary

// decodeEntry decodes an entry of the index file and brings its record to the current storage version
// (change.Record.Upgrade). The file's schema (Open) says which entry layout it holds; the record inside
// says its own version.
func decodeEntry(data []byte, e *Entry) error {
	if err := entryJSON.Unmarshal(data, e); err != nil {
		return err
	}
	return e.Record.Upgrade()
}
