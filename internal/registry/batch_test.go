package registry

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// TestResolveManyAnswersEachHandleAsResolveWould resolves a mixed batch
// (hits pinned and weak, collected, deleted, unknown, malformed, of
// another run, of another node, of another kind, duplicates) with
// ResolveMany and, handle by handle, with Resolve, and compares the
// answers, the hit and miss counts and the soft cache's hits. With info,
// the whole Info must agree (the clock is a fake one, so the access times
// do too); without, the fields ResolveMany promises.
func TestResolveManyAnswersEachHandleAsResolveWould(t *testing.T) {
	for _, tc := range []struct {
		name     string
		withInfo bool
		cache    int64
	}{
		{"with info", true, 0},
		{"data only", false, 0},
		{"with info and a soft cache", true, 1 << 20},
		{"data only and a soft cache", false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noAutoGC(t)
			clock := newFakeClock()
			r := newRegistry(t, Config{Now: clock.Now, SoftCacheBytes: tc.cache})
			by := newHolder(r)
			collected, _ := put(t, r, 100, 1, Meta{}, nil)
			r.Collect()
			pinned, _ := put(t, r, 100, 2, Meta{ContentType: "text/plain", Labels: map[string]string{"a": "b"}}, &by)
			weak, _ := put(t, r, 300, 3, Meta{}, nil)
			deleted, _ := put(t, r, 100, 4, Meta{}, &by)
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
			_, unknown := r.codec.New(handle.Object)
			forged := []byte(pinned.Handle)
			forged[len(forged)-2] ^= 1
			hs := []string{
				pinned.Handle, weak.Handle, collected.Handle, deleted.Handle, unknown,
				"nope", "", string(forged),
				other(testNode, testEpoch+1).Format(handle.Object, pinned.ID),
				other(testNode+1, testEpoch).Format(handle.Object, pinned.ID),
				r.codec.Format(handle.Lease, pinned.ID),
				pinned.Handle, collected.Handle, weak.Handle, "nope",
			}

			type answer struct {
				data []byte
				info Info
				err  error
			}
			cut := func(in Info) Info {
				if tc.withInfo {
					return in
				}
				return Info{ID: in.ID, Handle: in.Handle, Size: in.Size, SoftCached: in.SoftCached}
			}
			counts := func() (Stats, int64) {
				st := r.Stats()
				var cacheHits int64
				if r.cache != nil {
					cacheHits = r.cache.hits.Load()
				}
				return st, cacheHits
			}

			// Resolve each twice: the first pass fills the soft cache, so
			// that the second and ResolveMany start from the same state.
			for _, h := range hs {
				_, _ = r.Resolve(h)
			}
			st0, ch0 := counts()
			var single []answer
			for _, h := range hs {
				obj, err := r.Resolve(h)
				single = append(single, answer{bytes.Clone(obj.Data), cut(obj.Info), err})
			}
			st1, ch1 := counts()

			var many []answer
			r.ResolveMany(hs, tc.withInfo, func(i int, obj *Object, err error) {
				if i != len(many) {
					t.Fatalf("answer %d came after %d answers", i, len(many))
				}
				var a answer
				if err == nil {
					a = answer{bytes.Clone(obj.Data), cut(obj.Info), nil}
				} else {
					a.err = err
				}
				many = append(many, a)
			})
			st2, ch2 := counts()

			if len(many) != len(hs) {
				t.Fatalf("ResolveMany answered %d of %d handles", len(many), len(hs))
			}
			for i := range hs {
				if !reflect.DeepEqual(many[i], single[i]) {
					t.Errorf("handle %d (%q): ResolveMany = %+v; Resolve = %+v", i, hs[i], many[i], single[i])
				}
			}
			if got, want := st2.ResolveHits-st1.ResolveHits, st1.ResolveHits-st0.ResolveHits; got != want || want != 4 {
				t.Errorf("hits counted: ResolveMany %d, Resolve %d; want 4 each", got, want)
			}
			for reason, n := range st1.ResolveMisses {
				if got, want := st2.ResolveMisses[reason]-n, n-st0.ResolveMisses[reason]; got != want {
					t.Errorf("misses %s counted: ResolveMany %d, Resolve %d", reason, got, want)
				}
			}
			if got, want := ch2-ch1, ch1-ch0; got != want {
				t.Errorf("soft cache hits: ResolveMany %d, Resolve %d", got, want)
			}
		})
	}
}

// TestResolveManyHitsAllocateOncePerBatch: a batch of hits costs the
// registry one allocation whatever its length (the Object handed to fn).
func TestResolveManyHitsAllocateOncePerBatch(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	hs := make([]string, 64)
	for i := range hs {
		info, _ := put(t, r, 100, byte(i), Meta{}, &by)
		hs[i] = info.Handle
	}
	var n int
	fn := func(_ int, obj *Object, err error) {
		if err == nil && len(obj.Data) == 100 {
			n++
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { r.ResolveMany(hs, false, fn) }); allocs > 1 {
		t.Fatalf("ResolveMany of %d hits allocated %v times; want at most 1", len(hs), allocs)
	}
	if n != 101*len(hs) {
		t.Fatalf("%d hits answered; want %d", n, 101*len(hs))
	}
}

// BenchmarkResolveMany is a batch of a thousand hits, data only, against
// a thousand Resolves of the same handles: the cost per object.
func BenchmarkResolveMany(b *testing.B) {
	r := newRegistry(b, Config{})
	by := newHolder(r)
	hs := make([]string, 1000)
	for i := range hs {
		info, _ := put(b, r, benchSize, byte(i), Meta{}, &by)
		hs[i] = info.Handle
	}
	fn := func(_ int, _ *Object, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("ResolveMany", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.ResolveMany(hs, false, fn)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(hs)), "ns/object")
	})
	b.Run("Resolve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, h := range hs {
				if _, err := r.Resolve(h); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(hs)), "ns/object")
	})
}
