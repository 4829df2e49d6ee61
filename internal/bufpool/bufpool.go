// Package bufpool is a gRPC buffer pool that does not zero what it hands
// out.
//
// gRPC-Go's default pool (mem.DefaultBufferPool) clears every buffer it
// returns, and rounds a request up to its next tier: 256 B, 4 KiB, 16 KiB,
// 32 KiB, then 1 MiB. A 100 KiB message (a BatchResolve answer of a
// thousand 100-byte objects) so costs a clear of 1 MiB on each side of
// the call: a third of the client's CPU and a sixth of registryd's in
// the profile of batch-resolve. The buffers gRPC takes from a pool are
// filled whole before they are read (a marshal of exactly the message's
// size, a read of exactly a frame's or a message's length), so nothing
// stale is ever sent or parsed; the clearing buys nothing there.
package bufpool

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

const (
	// minShift and maxShift bound the sizes pooled: 2^minShift to
	// 2^maxShift bytes, in powers of two. Smaller and larger ones are
	// allocated, and left to the garbage collector.
	minShift = 8
	maxShift = 26
)

// Pool is a mem.BufferPool of buffers in powers of two that it does not
// clear. The zero value is not usable; use New. It is safe for concurrent
// use.
type Pool struct {
	classes [maxShift + 1]sync.Pool // by log2 of the capacity
}

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty Pool.
func New() *Pool { return &Pool{} }

// Default is the Pool registryd's codec, the Go client and registrybench
// share.
var Default = New()

// class is the power of two that holds n bytes, and whether it is pooled.
func class(n int) (int, bool) {
	if n <= 1<<minShift {
		return minShift, true
	}
	c := bits.Len(uint(n - 1))
	return c, c <= maxShift
}

// Get returns a buffer of length n whose bytes are whatever they were.
func (p *Pool) Get(n int) *[]byte {
	c, ok := class(n)
	if !ok {
		b := make([]byte, n)
		return &b
	}
	if b, _ := p.classes[c].Get().(*[]byte); b != nil {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put gives back a buffer Get returned. One of another capacity is left
// to the garbage collector.
func (p *Pool) Put(b *[]byte) {
	n := cap(*b)
	c, ok := class(n)
	if !ok || n != 1<<c {
		return
	}
	p.classes[c].Put(b)
}
