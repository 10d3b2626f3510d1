package gitrecord

import (
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// DefaultMaxDiffBytes bounds the diff a record carries unless a destination says otherwise: a record
// rebuilt from Git must cut its diff where the writer cut it.
const DefaultMaxDiffBytes = 64 << 10

// UnifiedDiff is the git-style unified diff of one file (a/ and b/ prefixes, /dev/null for a created
// or removed file), the form `git apply` accepts. Empty when nothing changed.
func UnifiedDiff(path string, old, new []byte, oldExists, newExists bool) string {
	if oldExists == newExists && string(old) == string(new) {
		return ""
	}
	from, to := "a/"+path, "b/"+path
	var head strings.Builder
	head.WriteString("diff --git a/" + path + " b/" + path + "\n")
	switch {
	case !oldExists:
		head.WriteString("new file mode 100644\n")
		from = "/dev/null"
	case !newExists:
		head.WriteString("deleted file mode 100644\n")
		to = "/dev/null"
	}
	body, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: splitLines(old), B: splitLines(new), FromFile: from, ToFile: to, Context: 3})
	if err != nil || body == "" {
		return ""
	}
	return head.String() + strings.ReplaceAll(body, noEOL+"\n", "\n\\ No newline at end of file\n")
}

// noEOL marks the last line of a file that lacks a final newline (only files written by others can:
// Sanitize always ends with one), so that it differs from the same line with a newline and is
// written back with git's "\ No newline at end of file".
const noEOL = "\x00"

// splitLines splits into lines that keep their "\n", the form difflib writes back verbatim.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n") {
		s += noEOL + "\n"
	}
	return strings.SplitAfter(s, "\n")[:strings.Count(s, "\n")]
}

// TruncateDiff cuts a diff to at most max bytes at a line boundary.
func TruncateDiff(d string, max int) (string, bool) {
	if len(d) <= max {
		return d, false
	}
	cut := strings.LastIndex(d[:max], "\n")
	if cut < 0 {
		return "", true
	}
	return d[:cut+1], true
}
