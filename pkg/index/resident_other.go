//go:build !linux

package index

import bolt "go.etcd.io/bbolt"

// dropMappedPages does nothing where MADV_DONTNEED on a shared file mapping is not known to be safe.
func (x *Index) dropMappedPages(*bolt.Tx) error { return nil }
