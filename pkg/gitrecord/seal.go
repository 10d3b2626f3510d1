package gitrecord

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// TrailerSeal is "<key ID>:<hex HMAC-SHA256>", the last line of every commit kubehistory makes.
const TrailerSeal = "Kubehistory-Seal"

// sealPurpose names the subkey, so that a seal can never be replayed as a fingerprint or vice versa.
const sealPurpose = "commit-seal"

// Seal adds the seal trailer to c.Message. c must be complete (tree, parents, author, committer,
// message) and its message must end with a newline; nothing may change c afterwards.
func Seal(key installkey.Key, c *object.Commit) {
	msg := stripSeal(c.Message)
	c.Message = msg + TrailerSeal + ": " + key.ID() + ":" + hex.EncodeToString(mac(key, c, msg)) + "\n"
}

// Verify says whether c carries a seal made under key over exactly its tree, parents, signatures and
// message. Anything else (no seal, another key, any field changed) is a foreign commit.
func Verify(key installkey.Key, c *object.Commit) bool {
	msg, seal, ok := cutSeal(c.Message)
	if !ok {
		return false
	}
	id, sum, ok := strings.Cut(seal, ":")
	if !ok || id != key.ID() {
		return false
	}
	got, err := hex.DecodeString(sum)
	if err != nil {
		return false
	}
	return hmac.Equal(got, mac(key, c, msg))
}

// mac is the HMAC over a length-prefixed encoding of every field of the commit that Git hashes, with
// the message msg standing in for c's own (the message without the seal line). Length prefixes keep
// fields from running into each other; signature times are in Unix seconds plus zone offset, as Git
// stores them.
func mac(key installkey.Key, c *object.Commit, msg string) []byte {
	m := hmac.New(sha256.New, key.Derive(sealPurpose))
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	sig := func(s object.Signature) {
		field(s.Name)
		field(s.Email)
		field(s.When.Format("-0700"))
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(s.When.Unix()))
		m.Write(n[:])
	}
	field("kubehistory-commit-seal/v1")
	field(c.TreeHash.String())
	field(strconv.Itoa(len(c.ParentHashes)))
	for _, p := range c.ParentHashes {
		field(p.String())
	}
	sig(c.Author)
	sig(c.Committer)
	field(msg)
	return m.Sum(nil)
}

// cutSeal splits the message into what the seal covers and the seal value; the seal must be the last
// line, so that nothing can be appended after it.
func cutSeal(msg string) (rest, seal string, ok bool) {
	body := strings.TrimSuffix(msg, "\n")
	i := strings.LastIndexByte(body, '\n')
	last := body[i+1:]
	v, ok := strings.CutPrefix(last, TrailerSeal+": ")
	if !ok {
		return msg, "", false
	}
	return body[:i+1], strings.TrimSpace(v), true
}

func stripSeal(msg string) string {
	rest, _, ok := cutSeal(msg)
	if ok {
		return rest
	}
	return msg
}
