// Package registry holds the REST storage of the read-only history API: it turns index entries into API
// objects and answers get and list. The sub-packages own one resource each; this package declares the
// small interfaces they need from the index, which pkg/index implements.
package registry
