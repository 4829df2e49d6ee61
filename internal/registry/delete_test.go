package registry

import (
	"errors"
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/weakref/registry/internal/handle"
)

func TestDeletedObjectResolvesAsDeleted(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	info, _ := put(t, r, 123, 1, Meta{}, nil)
	got, pins, err := r.Delete(info.ID, false)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got.ID != info.ID || got.Size != 123 || len(pins) != 0 {
		t.Fatalf("Delete = %+v with %d pins; want the object's info and none", got, len(pins))
	}
	wantGone(t, r, info.Handle, ErrDeleted)
	by := newHolder(r)
	if _, _, err := r.Pin(info.ID, by); !errors.Is(err, ErrDeleted) {
		t.Fatalf("Pin of a deleted object: %v; want ErrDeleted", err)
	}
	if _, _, err := r.Delete(info.ID, true); !errors.Is(err, ErrDeleted) {
		t.Fatalf("second Delete: %v; want ErrDeleted", err)
	}
	st := r.Stats()
	if st.Deleted != 1 || st.Objects[Weak] != 0 || st.Bytes[Weak] != 0 {
		t.Fatalf("Stats = deleted %d, weak %d (%d bytes); want 1, 0 (0)", st.Deleted, st.Objects[Weak], st.Bytes[Weak])
	}
	// A deleted object is not also counted as collected when its payload
	// is freed.
	r.Collect()
	if st := r.Stats(); st.Collected != 0 {
		t.Fatalf("Collected = %d after a deleted object was freed; want 0", st.Collected)
	}
	wantGone(t, r, info.Handle, ErrDeleted)
	assertHoldsNothing(t, r)
}

func TestPinnedObjectIsNotDeletedWithoutForce(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, want := put(t, r, 64, 2, Meta{}, &by)
	before := statsSnapshot(r)
	got, pins, err := r.Delete(info.ID, false)
	if !errors.Is(err, ErrPinned) {
		t.Fatalf("Delete without force: %v; want ErrPinned", err)
	}
	if got.State != Pinned || len(pins) != 1 || pins[0].Lease != by.ID || pins[0].LeaseID != by.LeaseID {
		t.Fatalf("Delete without force = %v, pins %+v; want PINNED and the one pin", got.State, pins)
	}
	wantUnchanged(t, r, before)
	r.Collect()
	obj := mustResolve(t, r, info.Handle, want)
	if obj.Info.State != Pinned || obj.Info.Pins != 1 {
		t.Fatalf("after a refused Delete: %v with %d pins; want PINNED with 1", obj.Info.State, obj.Info.Pins)
	}
}

func TestForceDeleteReturnsPinsAndRemovesObject(t *testing.T) {
	r := newRegistry(t, Config{})
	a, b := newHolder(r), newHolder(r)
	info, _ := put(t, r, 64, 3, Meta{}, &a)
	mustPin(t, r, info.ID, b)
	_, pins, err := r.Delete(info.ID, true)
	if err != nil {
		t.Fatalf("forced Delete: %v", err)
	}
	if len(pins) != 2 || pins[0].Lease != a.ID || pins[1].Lease != b.ID || pins[0].LeaseID != a.LeaseID || pins[1].LeaseID != b.LeaseID {
		t.Fatalf("forced Delete returned pins %+v; want a's then b's", pins)
	}
	wantGone(t, r, info.Handle, ErrDeleted)
	if _, pinned, err := r.Unpin(info.ID, a); !errors.Is(err, ErrDeleted) || pinned {
		t.Fatalf("Unpin after a forced Delete = %v, %v; want false, ErrDeleted", pinned, err)
	}
	st := r.Stats()
	if st.Pins != 0 || st.Objects[Pinned] != 0 || st.Bytes[Pinned] != 0 || st.Deleted != 1 {
		t.Fatalf("Stats = pins %d, pinned %d (%d bytes), deleted %d; want 0, 0 (0), 1", st.Pins, st.Objects[Pinned], st.Bytes[Pinned], st.Deleted)
	}
	r.Collect()
	assertHoldsNothing(t, r)
}

func TestTombstonesAreBounded(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{Tombstones: 2})
	var infos []Info
	for i := range 3 {
		info, _ := put(t, r, 10, byte(i), Meta{}, nil)
		infos = append(infos, info)
		if _, _, err := r.Delete(info.ID, false); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest deleted handle is forgotten: it reads as collected.
	wantGone(t, r, infos[0].Handle, ErrCollected)
	wantGone(t, r, infos[1].Handle, ErrDeleted)
	wantGone(t, r, infos[2].Handle, ErrDeleted)

	// The ring keeps turning.
	more, _ := put(t, r, 10, 9, Meta{}, nil)
	if _, _, err := r.Delete(more.ID, false); err != nil {
		t.Fatal(err)
	}
	wantGone(t, r, infos[1].Handle, ErrCollected)
	wantGone(t, r, infos[2].Handle, ErrDeleted)
	wantGone(t, r, more.Handle, ErrDeleted)
	r.tombs.mu.Lock()
	n := len(r.tombs.set)
	r.tombs.mu.Unlock()
	if n != 2 {
		t.Fatalf("tombstones hold %d handles, want 2", n)
	}
}

func TestDeleteOfUnknownIDSaysCollected(t *testing.T) {
	r := newRegistry(t, Config{})
	id, _ := r.codec.New(handle.Object)
	if _, _, err := r.Delete(id, true); !errors.Is(err, ErrCollected) {
		t.Fatalf("Delete of an ID never put: %v; want ErrCollected", err)
	}
}

// TestDeletedObjectsPayloadIsCollected: a deleted entry stays reachable
// from its payload's cleanup, whose argument it is, until the collector
// takes the payload; so Delete must leave it no strong pointer to the
// payload, or the cleanup would keep the payload alive for ever. Whatever
// the object's state when deleted, its bytes are collected once nothing
// else holds them.
func TestDeletedObjectsPayloadIsCollected(t *testing.T) {
	tests := []struct {
		name   string
		pinned bool
		linger time.Duration
	}{
		{name: "weak"},
		{name: "pinned, force-deleted", pinned: true},
		{name: "lingering", linger: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, Config{})
			by := newHolder(r)
			var holder *Holder
			if tt.pinned {
				holder = &by
			}
			data := newPayload(256, 7)
			bytesOf := weak.Make(&data[0]) // the bytes' own allocation, boxed or not
			info, err := r.Put(data, Meta{Linger: tt.linger}, holder)
			if err != nil {
				t.Fatal(err)
			}
			data = nil
			if _, _, err := r.Delete(info.ID, true); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the deleted object's bytes were not collected", func() bool {
				runtime.GC()
				return bytesOf.Value() == nil
			})
			wantGone(t, r, info.Handle, ErrDeleted)
		})
	}
}
