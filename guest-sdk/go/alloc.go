package nuropb

import "unsafe"

// allocator hands out the buffers behind nuropb_alloc. It keeps every live
// buffer referenced (the guest's garbage collector would otherwise free
// memory the host is writing into) and keeps a few freed ones for reuse, so
// that a steady stream of calls allocates nothing.
type allocator struct {
	live  [][]byte
	spare [][]byte
}

const (
	maxSpare     = 4
	maxSpareSize = 256 << 10
	minAlloc     = 1 << 10
)

func base(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// alloc returns a live buffer of n bytes.
func (a *allocator) alloc(n int) []byte {
	var b []byte
	for i, s := range a.spare {
		if cap(s) >= n {
			b = s[:n]
			a.spare[i] = a.spare[len(a.spare)-1]
			a.spare[len(a.spare)-1] = nil
			a.spare = a.spare[:len(a.spare)-1]
			break
		}
	}
	if b == nil {
		b = make([]byte, n, max(n, minAlloc))
	}
	a.live = append(a.live, b)
	return b
}

// view returns the n bytes at p if they lie within one live buffer.
func (a *allocator) view(p uintptr, n int) ([]byte, bool) {
	for i := len(a.live) - 1; i >= 0; i-- {
		b := a.live[i]
		start := base(b)
		if p >= start && p-start <= uintptr(cap(b)) && uintptr(n) <= uintptr(cap(b))-(p-start) {
			off := int(p - start)
			return b[off : off+n : off+n], true
		}
	}
	return nil, false
}

// free releases the live buffer starting at p; unknown pointers are ignored.
func (a *allocator) free(p uintptr) {
	for i := len(a.live) - 1; i >= 0; i-- {
		b := a.live[i]
		if base(b) != p {
			continue
		}
		a.live[i] = a.live[len(a.live)-1]
		a.live[len(a.live)-1] = nil
		a.live = a.live[:len(a.live)-1]
		if len(a.spare) < maxSpare && cap(b) <= maxSpareSize {
			a.spare = append(a.spare, b[:0])
		}
		return
	}
}

// freeSlice releases the live buffer that b starts, if it is one.
func (a *allocator) freeSlice(b []byte) {
	if cap(b) > 0 {
		a.free(base(b))
	}
}
