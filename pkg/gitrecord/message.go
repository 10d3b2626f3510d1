package gitrecord

import (
	"github.com/kubehistory/kubehistory/pkg/change"

	"fmt"
	"sort"
	"strings"
)

// UnknownAuthor is the author name of a commit whose actor has no username.
const UnknownAuthor = "unknown"

// AuthorName is the commit author's name for an actor's username.
func AuthorName(username string) string {
	if username == "" {
		return UnknownAuthor
	}
	return username
}

// Item is one change as a commit message lists it: "<verb> <resource[.group]> <[namespace/]name>".
// Only the object's group, resource, namespace and name are part of it.
type Item struct {
	Verb   change.Verb
	Object change.Object
}

func (it Item) String() string {
	o := it.Object
	res := o.Resource
	if o.Group != "" {
		res += "." + o.Group
	}
	name := o.Name
	if o.Namespace != "" {
		name = o.Namespace + "/" + o.Name
	}
	return fmt.Sprintf("%s %s %s", it.Verb, res, name)
}

// parseItem reads "<verb> <resource[.group]> <[namespace/]name>"; in the subject the last one may end
// in " and N more".
func parseItem(s string) (Item, bool) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return Item{}, false
	}
	var it Item
	it.Verb = change.Verb(f[0])
	it.Object.Resource, it.Object.Group, _ = strings.Cut(f[1], ".")
	if ns, name, ok := strings.Cut(f[2], "/"); ok {
		it.Object.Namespace, it.Object.Name = ns, name
	} else {
		it.Object.Name = f[2]
	}
	return it, true
}

// maxSubjectItems is how many items the subject names; beyond it the subject says "and N more" and
// the body lists them all.
const maxSubjectItems = 3

// Message is a kubehistory commit message (without the seal, which Seal appends): a subject naming the
// author and the changes ("alice: update configmaps team-a/web"), a body listing every change when the
// subject cannot, and the trailers.
type Message struct {
	// Author is the commit's author name (AuthorName of the actor).
	Author string
	// Items are the changes in commit order; Format writes a repeated item once, ParseMessage returns
	// the distinct ones.
	Items []Item
	// Trailers: one change ID line per entry of IDs, in order; AuditIDs written once each, in order;
	// Versions sorted by path; the Markers of each change ID in the order of IDs.
	Trailers
}

// Format writes the message. Its grammar is what ParseMessage reads back and what every commit the
// writer ever made follows: changing it is a change of the Git record format.
func (m Message) Format() string {
	var items []string
	seen := map[string]bool{}
	for _, it := range m.Items {
		s := it.String()
		if !seen[s] {
			seen[s] = true
			items = append(items, s)
		}
	}
	var b strings.Builder
	b.WriteString(m.Author + ": ")
	if len(items) <= maxSubjectItems {
		b.WriteString(strings.Join(items, ", "))
	} else {
		fmt.Fprintf(&b, "%s and %d more", strings.Join(items[:maxSubjectItems], ", "), len(items)-maxSubjectItems)
	}
	b.WriteString("\n\n")
	if len(items) > maxSubjectItems {
		for _, it := range items {
			b.WriteString("- " + it + "\n")
		}
		b.WriteString("\n")
	}
	for _, id := range m.IDs {
		fmt.Fprintf(&b, "%s: %s\n", TrailerChangeID, id)
	}
	auditSeen := map[string]bool{}
	for _, a := range m.AuditIDs {
		if a != "" && !auditSeen[a] {
			auditSeen[a] = true
			fmt.Fprintf(&b, "%s: %s\n", TrailerAuditID, a)
		}
	}
	if len(m.ActorGroups) > 0 {
		fmt.Fprintf(&b, "%s: %s\n", TrailerActorGroups, strings.Join(m.ActorGroups, ", "))
	}
	paths := make([]string, 0, len(m.Versions))
	for p := range m.Versions {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		v := m.Versions[p]
		rv := v.RV
		if rv == "" {
			rv = "-"
		}
		if v.Deleted {
			rv += " deleted"
		}
		fmt.Fprintf(&b, "%s: %s %s\n", TrailerObjectVersion, p, rv)
	}
	for _, id := range m.IDs {
		for _, mk := range m.Markers[id] {
			fmt.Fprintf(&b, "%s: %s %s\n", TrailerMarker, id, mk)
		}
	}
	return b.String()
}

// ParseMessage reads a commit message written by Format; author is the commit's author name, which
// starts the subject. Lines it does not know are ignored.
func ParseMessage(msg, author string) Message {
	m := Message{Author: author, Trailers: ParseTrailers(msg)}
	lines := strings.Split(msg, "\n")
	subject := strings.TrimPrefix(lines[0], author+": ")
	var listed []string
	for _, l := range lines[1:] {
		if s, ok := strings.CutPrefix(l, "- "); ok {
			listed = append(listed, s)
		}
	}
	texts := strings.Split(subject, ", ")
	if len(listed) > 0 && strings.Contains(subject, " more") {
		texts = listed
	}
	for _, t := range texts {
		if it, ok := parseItem(t); ok {
			m.Items = append(m.Items, it)
		}
	}
	return m
}
