package fs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/lazysnap/lazysnap/index"
	"golang.org/x/sys/unix"
)

// openSlots is how many files one mount can have open at once (a table
// of 512 KiB).
const openSlots = 1 << 16

// errOpenTableFull is an open past openSlots.
var errOpenTableFull = errors.New("fs: too many open files on one mount")

// slotPassthrough marks a slot open in passthrough.
const slotPassthrough = 1 << 31

// openTable is a mount's open files, one slot each, the slot being the
// file handle the kernel passes back. A slot holds the inode's Ino + 1
// (0 when free), with slotPassthrough for a passthrough open, and the
// backing ID that open uses. The kernel refuses a passthrough open of an
// inode that has files open in cached mode, a cached-mode open of one open
// in passthrough, and a second backing file for an inode, so a process
// serving the mount must know the opens, including its predecessor's:
// with a file, the table is a shared mapping of it, which outlives the
// process (even one killed mid-request) for its successor to map.
//
// A slot is set before the kernel hears of the open and cleared when it
// releases the file, idempotently: a predecessor that died after setting
// a slot whose open never reached the kernel leaves it set (its inode then
// keeps its mode and backing ID, which later opens may always use), and a
// RELEASE the kernel resends frees nothing twice.
type openTable struct {
	mu      sync.Mutex
	slots   []uint32 // 2 per slot: Ino+1|slotPassthrough, backing ID; shared with the file, if any
	mapped  []byte
	free    []int
	cached  map[index.Ino]int      // cached-mode opens per inode
	pass    map[index.Ino]*backing // passthrough opens per inode
	lastEnd []atomic.Int64         // where each handle's last read ended: sequential reads
}

type backing struct {
	id    int32
	opens int
}

// newOpenTable returns a table kept in path (created if missing, adopted
// with what it holds if not), or in memory when path is "".
func newOpenTable(path string) (*openTable, error) {
	t := &openTable{cached: map[index.Ino]int{}, pass: map[index.Ino]*backing{}, lastEnd: make([]atomic.Int64, openSlots)}
	if path == "" {
		t.slots = make([]uint32, 2*openSlots)
	} else {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("fs: open table: %w", err)
		}
		defer f.Close()
		size := openSlots * 8
		if err := f.Truncate(int64(size)); err != nil {
			return nil, fmt.Errorf("fs: open table: %w", err)
		}
		if t.mapped, err = unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return nil, fmt.Errorf("fs: open table: %w", err)
		}
		t.slots = unsafe.Slice((*uint32)(unsafe.Pointer(&t.mapped[0])), 2*openSlots)
	}
	for i := openSlots - 1; i >= 0; i-- {
		v := t.slots[2*i]
		switch {
		case v == 0:
			t.free = append(t.free, i)
		case v&slotPassthrough != 0:
			ino := index.Ino(v&^slotPassthrough - 1)
			if t.pass[ino] == nil {
				t.pass[ino] = &backing{id: int32(t.slots[2*i+1])}
			}
			t.pass[ino].opens++
		default:
			t.cached[index.Ino(v-1)]++
		}
	}
	return t, nil
}

// open opens ino in a slot: in passthrough with the inode's backing ID if
// it has passthrough opens; else, if it has no cached-mode opens and
// register (called under the table's lock) gives a backing ID, in
// passthrough with that; else in cached mode.
func (t *openTable) open(ino index.Ino, register func() (int32, bool)) (slot int, backingID int32, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.free) == 0 {
		return 0, 0, errOpenTableFull
	}
	v := uint32(ino) + 1
	b := t.pass[ino]
	if b == nil && t.cached[ino] == 0 {
		if id, ok := register(); ok {
			b = &backing{id: id}
			t.pass[ino] = b
		}
	}
	slot = t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	if b != nil {
		b.opens++
		backingID = b.id
		v |= slotPassthrough
	} else {
		t.cached[ino]++
	}
	t.slots[2*slot+1] = uint32(backingID)
	t.slots[2*slot] = v
	t.lastEnd[slot].Store(0)
	return slot, backingID, nil
}

// release frees slot, if set, and returns the backing ID to close, if the
// slot held the last passthrough open of its inode.
func (t *openTable) release(slot int) (closeID int32, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if slot < 0 || slot >= len(t.slots)/2 || t.slots[2*slot] == 0 {
		return 0, false
	}
	v := t.slots[2*slot]
	t.slots[2*slot] = 0
	t.free = append(t.free, slot)
	ino := index.Ino(v&^slotPassthrough - 1)
	if v&slotPassthrough == 0 {
		if t.cached[ino]--; t.cached[ino] <= 0 {
			delete(t.cached, ino)
		}
		return 0, false
	}
	b := t.pass[ino]
	if b == nil {
		return 0, false
	}
	if b.opens--; b.opens > 0 {
		return 0, false
	}
	delete(t.pass, ino)
	return b.id, true
}

// swapLastEnd records where a read of slot's file ended and returns where
// the one before ended.
func (t *openTable) swapLastEnd(slot int, end int64) int64 {
	if slot < 0 || slot >= len(t.lastEnd) {
		return -1
	}
	return t.lastEnd[slot].Swap(end)
}

// close unmaps the table; the file keeps what it holds.
func (t *openTable) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slots, t.free = nil, nil
	if t.mapped == nil {
		return nil
	}
	err := unix.Munmap(t.mapped)
	t.mapped = nil
	return err
}
