package index

import (
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// dropMappedPages unmaps the pages of the index file from the process (madvise MADV_DONTNEED on
// bbolt's read-only shared mapping): they stay in the kernel's page cache, and the next read of one
// maps it again from there, with the same content, so that it is safe while other transactions read.
// It must run inside a read transaction, tx, which keeps bbolt from remapping the file meanwhile; it
// covers only the part of the mapping tx sees.
func (x *Index) dropMappedPages(tx *bolt.Tx) error {
	info := x.db.Info()
	// Info.Data is the address of the mapping, as an integer; read it back as the pointer it is.
	base := *(*unsafe.Pointer)(unsafe.Pointer(&info.Data))
	if base == nil || tx.Size() <= 0 {
		return nil
	}
	return unix.Madvise(unsafe.Slice((*byte)(base), tx.Size()), unix.MADV_DONTNEED)
}
