package memory

// ring is a growable double-ended queue. Queues need both ends: new messages
// go to the back, requeued ones to the front, as RabbitMQ puts a rejected
// message back near its old place rather than behind everything that came
// after it.
type ring[T any] struct {
	buf  []T // len is zero or a power of two, so positions wrap with a mask
	head int
	n    int
}

// shrinkAbove is the capacity above which an emptied ring gives its buffer
// back, so that one burst does not pin memory for the life of the queue.
const shrinkAbove = 4096

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 8
	}
	buf := make([]T, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = buf, 0
}

func (r *ring[T]) pushBack(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

func (r *ring[T]) pushFront(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = v
	r.n++
}

func (r *ring[T]) popFront() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero // let the garbage collector have what was popped
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if r.n == 0 && len(r.buf) > shrinkAbove {
		r.buf, r.head = nil, 0
	}
	return v, true
}

// filter keeps, in order, the elements for which keep returns true.
func (r *ring[T]) filter(keep func(T) bool) {
	var zero T
	kept := 0
	for i := range r.n {
		v := r.buf[(r.head+i)&(len(r.buf)-1)]
		if keep(v) {
			r.buf[(r.head+kept)&(len(r.buf)-1)] = v
			kept++
		}
	}
	for i := kept; i < r.n; i++ {
		r.buf[(r.head+i)&(len(r.buf)-1)] = zero
	}
	r.n = kept
}

// each calls f on every element, front to back.
func (r *ring[T]) each(f func(T)) {
	for i := range r.n {
		f(r.buf[(r.head+i)&(len(r.buf)-1)])
	}
}
