package registry

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestOwnedPayloadsAttachToTheBytes: with Config.OwnedPayloads, a payload
// in one slice of at least directMin bytes is held by its own allocation,
// with no box; smaller ones and payloads in pieces keep the box. Either
// way a pinned object survives collections and a WEAK one is collected
// once nothing holds its bytes, and Resolve answers the very bytes given.
func TestOwnedPayloadsAttachToTheBytes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		pieces []int
		direct bool
	}{
		{"one slice of directMin bytes", []int{directMin}, true},
		{"one slice of 100 bytes", []int{100}, true},
		{"one slice below directMin", []int{directMin - 1}, false},
		{"a tiny slice", []int{8}, false},
		{"two pieces", []int{100, 100}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, Config{OwnedPayloads: true})
			by := newHolder(r)
			var pl Payload
			var want []byte
			for i, n := range tt.pieces {
				b := newPayload(n, byte(i+1))
				want = append(want, b...)
				if i == 0 {
					pl.Data = b
				} else {
					pl.More = append(pl.More, b)
				}
			}
			pinned, err := r.PutPayload(pl, Meta{}, &by)
			if err != nil {
				t.Fatal(err)
			}
			weakInfo, err := r.PutPayload(Payload{Data: newPayload(tt.pieces[0], 9)}, Meta{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if e := r.entryOf(pinned.ID); e == nil || e.has(flagDirect) != tt.direct {
				t.Fatalf("entry %+v: direct, want %v", e, tt.direct)
			}
			obj, err := r.Resolve(pinned.Handle)
			if err != nil {
				t.Fatal(err)
			}
			if got := obj.Payload().Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("Resolve = %d bytes, not the %d put", len(got), len(want))
			}
			if &obj.Data[0] != &pl.Data[0] || len(obj.Data) != len(pl.Data) || cap(obj.Data) != len(pl.Data) {
				t.Fatal("Resolve answered other bytes than those given")
			}
			pl, obj = Payload{}, Object{} // hold nothing of the objects
			waitFor(t, 20*time.Second, "the weak object collected", func() bool {
				runtime.GC()
				_, err := r.Resolve(weakInfo.Handle)
				return errors.Is(err, ErrCollected)
			})
			if _, err := r.Resolve(pinned.Handle); err != nil {
				t.Fatalf("pinned object after collections: %v", err)
			}
			runtime.KeepAlive(pl)
			runtime.KeepAlive(obj)
		})
	}
}
