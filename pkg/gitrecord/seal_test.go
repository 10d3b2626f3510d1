package gitrecord

import (
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/kubehistory/kubehistory/pkg/installkey"
)

func commit() *object.Commit {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600))
	return &object.Commit{
		Author:       object.Signature{Name: "alice", Email: "alice@example.com", When: at},
		Committer:    object.Signature{Name: "kubehistory", Email: "kubehistory@example.com", When: at.Add(time.Second)},
		Message:      "update configmaps team-a/web\n\nKubehistory-Object-Version: clusters/dev/web.yaml 100\n",
		TreeHash:     plumbing.NewHash("1111111111111111111111111111111111111111"),
		ParentHashes: []plumbing.Hash{plumbing.NewHash("2222222222222222222222222222222222222222")},
	}
}

func TestSeal(t *testing.T) {
	key := installkey.ForTest("seal")
	tests := []struct {
		name   string
		tamper func(c *object.Commit)
		key    installkey.Key
		want   bool
	}{
		{name: "sealed", tamper: func(*object.Commit) {}, key: key, want: true},
		{name: "other key", tamper: func(*object.Commit) {}, key: installkey.ForTest("other"), want: false},
		{name: "message", tamper: func(c *object.Commit) {
			c.Message = "update configmaps team-a/web\n\nKubehistory-Object-Version: clusters/dev/web.yaml 18446744073709551615\n" + c.Message[len(c.Message)-len("Kubehistory-Seal: ")-8-1-64-1:]
		}, key: key, want: false},
		{name: "appended line", tamper: func(c *object.Commit) { c.Message += "Kubehistory-Change-Id: forged\n" }, key: key, want: false},
		{name: "tree", tamper: func(c *object.Commit) { c.TreeHash = plumbing.NewHash("3333333333333333333333333333333333333333") }, key: key, want: false},
		{name: "parent", tamper: func(c *object.Commit) {
			c.ParentHashes = []plumbing.Hash{plumbing.NewHash("4444444444444444444444444444444444444444")}
		}, key: key, want: false},
		{name: "no parent", tamper: func(c *object.Commit) { c.ParentHashes = nil }, key: key, want: false},
		{name: "author", tamper: func(c *object.Commit) { c.Author.Name = "mallory" }, key: key, want: false},
		{name: "committer time", tamper: func(c *object.Commit) { c.Committer.When = c.Committer.When.Add(time.Second) }, key: key, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := commit()
			Seal(key, c)
			tc.tamper(c)
			if got := Verify(tc.key, c); got != tc.want {
				t.Errorf("Verify = %v, want %v\n%s", got, tc.want, c.Message)
			}
		})
	}
	if Verify(key, commit()) {
		t.Error("an unsealed commit verified")
	}
}

// TestSealSurvivesEncoding: a sealed commit written to Git and read back (times in seconds, zones as
// offsets) still verifies.
func TestSealSurvivesEncoding(t *testing.T) {
	key := installkey.ForTest("seal")
	c := commit()
	c.Committer.When = c.Committer.When.Add(123456789 * time.Nanosecond).In(time.UTC)
	c.Committer.When = c.Committer.When.Truncate(time.Second)
	Seal(key, c)
	obj := &plumbing.MemoryObject{}
	if err := c.Encode(obj); err != nil {
		t.Fatal(err)
	}
	back := &object.Commit{}
	if err := back.Decode(obj); err != nil {
		t.Fatal(err)
	}
	if !Verify(key, back) {
		t.Errorf("a sealed commit does not verify after encoding:\n%s", back.Message)
	}
}
