//go:build !linux

package index

// dropMappedPages does nothing where MADV_DONTNEED on a shared file mapping is not known to be safe.
func (x *Index) dropMappedPages() error { return nil }
