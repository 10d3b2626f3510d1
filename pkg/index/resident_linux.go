package index

import (
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// dropMappedPages unmaps the pages of the index file from the process (madvise MADV_DONTNEED on
// bbolt's read-only shared mapping): they stay in the kernel's page cache, and the next read of one
// maps it again from there, with the same content. It runs inside a read transaction, which keeps bbolt
// from remapping the file meanwhile, and covers only the part of the mapping the transaction sees.
func (x *Index) dropMappedPages() error {
	return x.db.View(func(tx *bolt.Tx) error {
		info := x.db.Info()
		// Info.Data is the address of the mapping, as an integer; read it back as the pointer it is.
		base := *(*unsafe.Pointer)(unsafe.Pointer(&info.Data))
		if base == nil || tx.Size() <= 0 {
			return nil
		}
		return unix.Madvise(unsafe.Slice((*byte)(base), tx.Size()), unix.MADV_DONTNEED)
	})
}
