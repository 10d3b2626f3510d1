package gitrecord

import (
	"github.com/kubehistory/kubehistory/pkg/change"

	"strings"
)

// ObjectPath is where an object's YAML lives in a destination's repository:
// <prefix>/<namespace or _cluster>/<group or core>/<resource>/<name>.yaml. It is part of the contract
// between the reconciler (which lists expected paths), the writer (which owns the files) and the index
// rebuilt from Git (which finds an object's file by it).
func ObjectPath(prefix string, obj change.Object) string {
	ns := obj.Namespace
	if ns == "" {
		ns = ClusterDir
	}
	group := obj.Group
	if group == "" {
		group = CoreGroupDir
	}
	parts := []string{pathSegment(ns), pathSegment(group), pathSegment(obj.Resource), pathSegment(obj.Name) + ".yaml"}
	if prefix = strings.Trim(prefix, "/"); prefix != "" {
		parts = append([]string{prefix}, parts...)
	}
	return strings.Join(parts, "/")
}

// Folder names of ObjectPath for cluster-scoped objects and the core group.
const (
	ClusterDir   = "_cluster"
	CoreGroupDir = "core"
)

// ObjectFromPath is the inverse of ObjectPath("", obj) for namespace, group, resource and name; ok is
// false for a path that ObjectPath cannot have made.
func ObjectFromPath(rel string) (change.Object, bool) {
	parts := strings.Split(rel, "/")
	if len(parts) != 4 || !strings.HasSuffix(parts[3], ".yaml") {
		return change.Object{}, false
	}
	var o change.Object
	if parts[0] != ClusterDir {
		o.Namespace = unescapeSegment(parts[0])
	}
	if parts[1] != CoreGroupDir {
		o.Group = unescapeSegment(parts[1])
	}
	o.Resource = unescapeSegment(parts[2])
	o.Name = unescapeSegment(strings.TrimSuffix(parts[3], ".yaml"))
	if o.Resource == "" || o.Name == "" {
		return o, false
	}
	return o, true
}

// pathSegment keeps a name from escaping its folder: Kubernetes names cannot hold "/", but a change
// message is outside input.
func pathSegment(s string) string {
	switch s {
	case "", ".", "..":
		return "_" + s + "_"
	}
	return strings.ReplaceAll(s, "/", "%2F")
}

func unescapeSegment(s string) string {
	switch s {
	case "__", "_._", "_.._":
		return s[1 : len(s)-1]
	}
	return strings.ReplaceAll(s, "%2F", "/")
}
