package bufpool

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestGetReturnsTheLengthAskedInAPowerOfTwo(t *testing.T) {
	p := New()
	for _, tt := range []struct{ n, capacity int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {100 << 10, 128 << 10}, {1 << 20, 1 << 20}, {1<<26 + 1, 1<<26 + 1},
	} {
		b := p.Get(tt.n)
		if len(*b) != tt.n || cap(*b) != tt.capacity {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tt.n, len(*b), cap(*b), tt.n, tt.capacity)
		}
		p.Put(b)
	}
}

func TestPutBuffersAreReused(t *testing.T) {
	p := New()
	allocs := testing.AllocsPerRun(100, func() {
		b := p.Get(100 << 10)
		(*b)[0] = 1
		p.Put(b)
	})
	// sync.Pool may drop an item at a GC; most rounds reuse one.
	if allocs > 0.5 {
		t.Errorf("%.2f allocations per Get and Put of a pooled size, want reuse", allocs)
	}
}

func TestPutIgnoresForeignCapacities(t *testing.T) {
	p := New()
	b := make([]byte, 300)
	p.Put(&b) // not a power of two: dropped, not handed out short
	if got := p.Get(300); cap(*got) != 512 {
		t.Errorf("Get(300) after a foreign Put: cap %d, want 512", cap(*got))
	}
}

func BenchmarkGetPut100KiB(b *testing.B) {
	p := New()
	for b.Loop() {
		buf := p.Get(100 << 10)
		p.Put(buf)
	}
}

func TestCodecRoundTrips(t *testing.T) {
	var c Codec
	// The third reuses the second's buffer, stale bytes and all.
	for i, n := range []int{10, 100 << 10, 100<<10 - 10} {
		in := wrapperspb.Bytes(bytes.Repeat([]byte{byte(i)}, n))
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.Marshal(in)
		if got := data.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: marshalled %d bytes unlike proto.Marshal's %d", n, len(got), len(want))
		}
		out := new(wrapperspb.BytesValue)
		if err := c.Unmarshal(data, out); err != nil || !proto.Equal(in, out) {
			t.Fatalf("%d bytes: round trip %v", n, err)
		}
		data.Free()
	}
}
