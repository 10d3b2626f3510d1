package change

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the version of the storage format this build writes, in field "v" of every Change, Record
// and index entry. Records written before the format had a version carry no "v": they are version 1.
//
// A version 2 (a renamed or reshaped field) keeps the version 1 types under other names, adds its case
// to Record.Upgrade and Change.Upgrade (decode data again into the old type and convert), and bumps
// Version; the registry's conversion to the API follows the current types only.
const Version = 1

// ErrUnknownVersion is the error, under errors.Is, of a record whose version this build cannot read: one
// written by a newer build. It must not be dropped as undecodable: a newer replica reads it.
var ErrUnknownVersion = errors.New("unknown storage version")

func unknownVersion(what string, v int) error {
	return fmt.Errorf("%s has storage version %d, this build reads up to %d: %w", what, v, Version, ErrUnknownVersion)
}

// Upgrade brings a record that was decoded into the current types (by DecodeRecord, or by the index
// as part of an entry) to the current version, or fails with ErrUnknownVersion.
func (r *Record) Upgrade() error {
	switch r.V {
	case 0, 1: // 0: written before records had a version; the same fields as version 1
		r.V = Version
		return nil
	default:
		return unknownVersion("record "+r.ChangeID, r.V)
	}
}

// Upgrade is Record.Upgrade for a change.
func (c *Change) Upgrade() error {
	switch c.V {
	case 0, 1:
		c.V = Version
		return nil
	default:
		return unknownVersion("change "+c.ChangeID, c.V)
	}
}

// DecodeChange decodes a message of KUBEHISTORY_CHANGES, of any version this build reads.
func DecodeChange(data []byte, c *Change) error {
	if v := leadingVersion(data); v > Version {
		return unknownVersion("change", v)
	}
	if err := json.Unmarshal(data, c); err != nil {
		return versionOr("change", data, err)
	}
	return c.Upgrade()
}

// DecodeRecord decodes a message of KUBEHISTORY_HISTORY, of any version this build reads.
func DecodeRecord(data []byte, r *Record) error {
	if v := leadingVersion(data); v > Version {
		return unknownVersion("record", v)
	}
	if err := json.Unmarshal(data, r); err != nil {
		return versionOr("record", data, err)
	}
	return r.Upgrade()
}

// EncodeRecord encodes a record for KUBEHISTORY_HISTORY in the current version.
func EncodeRecord(r *Record) ([]byte, error) {
	v := *r
	v.V = Version
	return json.Marshal(&v)
}

// versionOr explains a message that did not decode into the current types: when it names a newer
// version anywhere (not only first, as this package writes it), that version reshaped a field and the
// message is ErrUnknownVersion, to be left for a newer build, not dropped as undecodable. Otherwise
// it is decodeErr.
func versionOr(what string, data []byte, decodeErr error) error {
	var head struct {
		V json.Number `json:"v"`
	}
	if json.Unmarshal(data, &head) != nil {
		return decodeErr
	}
	if v, err := head.V.Int64(); err == nil && v > Version {
		return unknownVersion(what, int(min(v, 1<<30)))
	}
	return decodeErr
}

// leadingVersion reads the version of a message that starts with it, as this package writes them, before
// the message is decoded into types that a newer version may have reshaped; 0 otherwise (the message is
// then decoded as the current version, and Upgrade checks any "v" found elsewhere).
func leadingVersion(data []byte) int {
	const prefix = `{"v":`
	if len(data) < len(prefix) || string(data[:len(prefix)]) != prefix {
		return 0
	}
	v := 0
	for _, c := range data[len(prefix):] {
		if c < '0' || c > '9' || v > 1<<20 {
			break
		}
		v = v*10 + int(c-'0')
	}
	return v
}
