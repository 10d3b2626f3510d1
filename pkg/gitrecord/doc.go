// Package gitrecord is the Git record format: what a destination's repository holds and how to read it
// back, shared by the Git writer (which makes kubehistory's commits), the reconciler (which names the
// files it expects) and the read side (the index rebuilt from Git), so that the read side never imports
// the writer.
//
// The format is: where an object's file lives (ObjectPath); the commit message, a subject naming the
// actor and the changes plus the trailers that carry change IDs, audit IDs, the actor's groups, the
// resourceVersion each file was written at and the markers the writer added (Message, ParseTrailers);
// the seal that tells kubehistory's own commits from anyone else's (Seal, Verify); and how a record's
// diff and repository URL are derived (UnifiedDiff, TruncateDiff, RedactedURL), so that a record
// rebuilt from Git equals the one the writer published. Every commit ever written follows it: a
// change here is a format change, held by the tests.
package gitrecord
