package registry

import (
	"errors"
	"reflect"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// TestResolveWithoutMACAgreesWithMAC checks the hit path that recognises
// a live object's handle by its kept tag against the MAC: for the handle
// itself, the handle altered in every byte, and the same ID under another
// node, run and kind (same key), Resolve, Stat and Parse answer what
// verifying the MAC and then looking up the ID answers, and the object
// stays as it was.
func TestResolveWithoutMACAgreesWithMAC(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	pinned, want := put(t, r, 100, 1, Meta{}, &by)
	deleted, _ := put(t, r, 100, 2, Meta{}, &by)
	if _, _, err := r.Delete(deleted.ID, true); err != nil {
		t.Fatal(err)
	}
	other := func(node uint16, epoch uint64) *handle.Codec {
		c, err := handle.NewCodec(handle.Config{Key: testKey, Node: node, Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// oracle is the answer with the MAC verified first, as before the hit
	// path.
	oracle := func(h string) (handle.ID, error) {
		id, err := r.codec.Parse(handle.Object, h)
		if err != nil {
			return handle.ID{}, err
		}
		s := r.shard(id)
		s.mu.RLock()
		defer s.mu.RUnlock()
		if _, err := r.live(s, id); err != nil {
			return handle.ID{}, err
		}
		return id, nil
	}
	var tries []string
	for _, info := range []Info{pinned, deleted} {
		h := info.Handle
		tries = append(tries, h,
			other(testNode+1, testEpoch).Format(handle.Object, info.ID),
			other(testNode, testEpoch+1).Format(handle.Object, info.ID),
			handle.Object.Prefix()+r.codec.Format(handle.Lease, info.ID)[len(handle.Lease.Prefix()):],
			r.codec.Format(handle.Lease, info.ID))
		for i := range len(h) {
			for _, d := range []byte{1, 0x20} {
				b := []byte(h)
				b[i] ^= d
				tries = append(tries, string(b))
			}
		}
	}
	for _, h := range tries {
		wantID, wantErr := oracle(h)
		obj, err := r.Resolve(h)
		if !sameError(err, wantErr) || (err == nil && (obj.Info.ID != wantID || obj.Info.Handle != h)) {
			t.Errorf("Resolve(%q) = %x, %v; the MAC says %x, %v", h, obj.Info.ID, err, wantID, wantErr)
		}
		if _, err := r.Stat(h); !sameError(err, wantErr) {
			t.Errorf("Stat(%q): %v; the MAC says %v", h, err, wantErr)
		}
		id, err := r.Parse(h)
		if macID, macErr := r.codec.Parse(handle.Object, h); id != macID || !sameError(err, macErr) {
			t.Errorf("Parse(%q) = %x, %v; the MAC says %x, %v", h, id, err, macID, macErr)
		}
	}
	mustResolve(t, r, pinned.Handle, want)
	if in, _ := r.Stat(pinned.Handle); in.State != Pinned || in.Pins != 1 || in.Handle != pinned.Handle {
		t.Fatalf("after the tries: %+v, want pinned once under %q", in, pinned.Handle)
	}
}

// sameError reports whether got is want: the same sentinel, or an error
// of the same type with the same fields.
func sameError(got, want error) bool {
	if got == nil || want == nil {
		return got == nil && want == nil
	}
	return errors.Is(got, want) || reflect.TypeOf(got) == reflect.TypeOf(want) && reflect.DeepEqual(got, want)
}

// TestParsedCallsCarryTheHandle: PinParsed and UnpinHandoffParsed answer,
// and publish, with the handle the caller parsed, which is the one Pin,
// Unpin and Stat make again from what the entry keeps.
func TestParsedCallsCarryTheHandle(t *testing.T) {
	r := newRegistry(t, Config{})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(t, r, 100, 1, Meta{}, &keeper)
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, parsed := range []bool{true, false} {
		h := ""
		if parsed {
			h = info.Handle
		}
		pinned, _, err := r.PinParsed(info.ID, h, by)
		if err != nil || pinned.Handle != info.Handle || pinned.Pins != 2 {
			t.Fatalf("PinParsed(%q) = %+v, %v; want 2 pins under %q", h, pinned, err, info.Handle)
		}
		if ev := nextEvent(t, sub); ev.Kind != EventPinned || ev.Handle != info.Handle {
			t.Fatalf("after PinParsed(%q): %+v, want PINNED of %q", h, ev, info.Handle)
		}
		unpinned, ok, err := r.UnpinHandoffParsed(info.ID, h, by, 0)
		if err != nil || !ok || unpinned.Handle != info.Handle || unpinned.Pins != 1 {
			t.Fatalf("UnpinHandoffParsed(%q) = %+v, %v, %v; want 1 pin under %q", h, unpinned, ok, err, info.Handle)
		}
		if ev := nextEvent(t, sub); ev.Kind != EventUnpinned || ev.Handle != info.Handle {
			t.Fatalf("after UnpinHandoffParsed(%q): %+v, want UNPINNED of %q", h, ev, info.Handle)
		}
	}
	if st, err := r.StatID(info.ID); err != nil || st.Handle != info.Handle {
		t.Fatalf("StatID = %+v, %v; want the handle %q", st, err, info.Handle)
	}
}
