package handle_test

import (
	"crypto/subtle"
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

// FuzzSplitAgreesWithParse checks the fast way to recognise a handle
// against the MAC: Split, then comparing the tag with the one kept for
// the ID (as a registry keeps it for each live object), accepts exactly
// the strings Parse accepts, with the same ID. The seeds are valid
// handles, each altered in every byte, and handles of another node, run
// and kind under the same key.
func FuzzSplitAgreesWithParse(f *testing.F) {
	c := fuzzCodec(f)
	others := []*handle.Codec{
		newCodec(f, handle.Config{Node: 8, Epoch: 12345}),
		newCodec(f, handle.Config{Node: 7, Epoch: 12346}),
	}
	for _, id := range fuzzIDs {
		for _, k := range kinds {
			h := c.Format(k, id)
			f.Add(h, uint8(k))
			f.Add(h, uint8((k+1)%3))
			for i := range len(h) {
				for _, d := range []byte{1, 0x20} {
					b := []byte(h)
					b[i] ^= d
					f.Add(string(b), uint8(k))
				}
			}
			for _, o := range others {
				f.Add(o.Format(k, id), uint8(k))
			}
		}
	}
	f.Fuzz(func(t *testing.T, s string, kind uint8) {
		k := handle.Kind(kind % 3)
		id, mac, ok := c.Split(k, s)
		kept := c.MAC(k, id)
		fast := ok && subtle.ConstantTimeCompare(mac[:], kept[:]) == 1
		got, err := c.Parse(k, s)
		if fast != (err == nil) {
			t.Fatalf("%v handle %q: Split and the kept tag say %v, Parse says %v", k, s, fast, err)
		}
		if fast && got != id {
			t.Fatalf("%v handle %q: Split read %x, Parse %x", k, s, id, got)
		}
		if fast && c.FormatMAC(k, id, mac) != s {
			t.Fatalf("%v handle %q: FormatMAC gives %q", k, s, c.FormatMAC(k, id, mac))
		}
	})
}
