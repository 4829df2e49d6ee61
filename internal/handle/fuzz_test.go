package handle_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// fuzzCodec is the codec every fuzz target parses with. Its key, node and
// epoch are fixed so that the valid handles in testdata/fuzz stay valid.
func fuzzCodec(t testing.TB) *handle.Codec {
	return newCodec(t, handle.Config{Node: 7, Epoch: 12345})
}

var fuzzIDs = []handle.ID{
	{},
	{0: 1, 15: 0xff},
	{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
}

// FuzzParse checks that Parse never panics and that a string it accepts is
// exactly the handle Format makes of the result: no second spelling of a
// handle passes.
func FuzzParse(f *testing.F) {
	c := fuzzCodec(f)
	for _, id := range fuzzIDs {
		for _, k := range kinds {
			h := c.Format(k, id)
			f.Add(h, uint8(k))
			f.Add(h, uint8(1-k)) // the other kind
			f.Add(h[:len(h)-1], uint8(k))
			f.Add(h+"A", uint8(k))
			f.Add(strings.ToUpper(h), uint8(k))
		}
	}
	for _, s := range []string{"", "obj_", "lse_", "obj_" + strings.Repeat("A", handle.EncodedLen), "obj_" + strings.Repeat("=", handle.EncodedLen), "\x00\xff"} {
		f.Add(s, uint8(handle.Object))
	}
	f.Fuzz(func(t *testing.T, s string, kind uint8) {
		k := handle.Kind(kind)
		id, err := c.Parse(k, s)
		if err != nil {
			if id != (handle.ID{}) {
				t.Fatalf("Parse(%v, %q) = %x with error %v; want the zero ID", k, s, id, err)
			}
			return
		}
		if got := c.Format(k, id); got != s {
			t.Fatalf("Parse(%v, %q) accepted it as %x, whose handle is %q", k, s, id, got)
		}
	})
}

// FuzzFormatParse checks that every ID survives Format and Parse, and is
// refused under the other kind.
func FuzzFormatParse(f *testing.F) {
	c := fuzzCodec(f)
	for _, id := range fuzzIDs {
		f.Add(id[:], uint8(handle.Object))
		f.Add(id[:], uint8(handle.Lease))
	}
	f.Fuzz(func(t *testing.T, b []byte, kind uint8) {
		var id handle.ID
		copy(id[:], b)
		k := handle.Kind(kind % 2)
		h := c.Format(k, id)
		got, err := c.Parse(k, h)
		if err != nil || got != id {
			t.Fatalf("Parse(%v, Format(%x)) = %x, %v", k, id, got, err)
		}
		other := handle.Lease - k
		if got, err := c.Parse(other, h); err == nil {
			t.Fatalf("Parse(%v, %q) of a %v handle = %x, nil; want an error", other, h, k, got)
		}
		if got, err := c.Parse(other, other.Prefix()+h[len(k.Prefix()):]); !errors.Is(err, handle.ErrUnknown) {
			t.Fatalf("Parse(%v) of a %v handle under the %v prefix = %x, %v; want ErrUnknown", other, k, other, got, err)
		}
	})
}
