package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// TestPeekAgreesWithInfo: the Info a Resolve hit makes from what peek read
// without the lock, and the one Pin and Unpin fill in place, are the one
// e.info makes, in every state an object may be resolved in.
func TestPeekAgreesWithInfo(t *testing.T) {
	if !orderedLoads {
		t.Skip("peek declines on this architecture (peek_weak.go)")
	}
	meta := Meta{ContentType: "text/plain", Labels: map[string]string{"a": "b"}, Owner: "alice"}
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, r *Registry) Info
	}{
		{"weak", func(t *testing.T, r *Registry) Info {
			info, _ := put(t, r, 32, 1, Meta{}, nil)
			return info
		}},
		{"weak with metadata", func(t *testing.T, r *Registry) Info {
			info, _ := put(t, r, 32, 1, meta, nil)
			return info
		}},
		{"pinned twice", func(t *testing.T, r *Registry) Info {
			a, b := newHolder(r), newHolder(r)
			info, _ := put(t, r, 32, 1, meta, &a)
			mustPin(t, r, info.ID, b)
			return info
		}},
		{"lingering", func(t *testing.T, r *Registry) Info {
			info, _ := put(t, r, 32, 1, Meta{Linger: time.Hour, Labels: meta.Labels}, nil)
			return info
		}},
		{"handed off", func(t *testing.T, r *Registry) Info {
			by := newHolder(r)
			info, _ := put(t, r, 32, 1, Meta{}, &by)
			if _, _, err := r.UnpinHandoff(info.ID, by, time.Hour); err != nil {
				t.Fatal(err)
			}
			return info
		}},
		{"soft cached", func(t *testing.T, r *Registry) Info {
			info, _ := put(t, r, 32, 1, Meta{}, nil)
			if _, err := r.Resolve(info.Handle); err != nil {
				t.Fatal(err)
			}
			return info
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			noAutoGC(t)
			r := newRegistry(t, Config{SoftCacheBytes: 1 << 20})
			info := tt.setup(t, r)
			s := r.shard(info.ID)
			var v entryView
			e, ok := s.peek(info.ID, &v)
			if !ok {
				t.Fatal("peek found nothing in a shard nobody changes")
			}
			var got Info
			e.infoOf(&got, &v, info.Handle)
			s.mu.RLock()
			want := e.info(info.Handle)
			s.mu.RUnlock()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("from peek:\n%+v\nunder the lock:\n%+v", got, want)
			}
			var filled Info
			s.mu.RLock()
			e.fillInfo(&filled, info.Handle)
			s.mu.RUnlock()
			if !reflect.DeepEqual(filled, want) {
				t.Fatalf("filled in place:\n%+v\nmade by info:\n%+v", filled, want)
			}
		})
	}
}

// TestPeekGivesUpWhileAWriterHoldsTheShard: a peek that meets a writer,
// holding the lock or come and gone, reports nothing, and an absent ID is
// not found.
func TestPeekGivesUpWhileAWriterHoldsTheShard(t *testing.T) {
	if !orderedLoads {
		t.Skip("peek declines on this architecture (peek_weak.go)")
	}
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, _ := put(t, r, 32, 1, Meta{}, &by)
	s := r.shard(info.ID)
	var v entryView
	s.lock()
	_, ok := s.peek(info.ID, &v)
	s.unlock()
	if ok {
		t.Fatal("peek answered while a writer held the shard")
	}
	if _, ok := s.peek(info.ID, &v); !ok {
		t.Fatal("peek found nothing once the writer left")
	}
	absent := info.ID
	absent[15] ^= 1
	if e, ok := s.peek(absent, &v); ok || e != nil {
		t.Fatalf("peek of an absent ID = %p, %v", e, ok)
	}
}

// TestResolveWithoutLockRacingWriters tries to break the lock-free read:
// resolvers run while other goroutines pin and unpin (each a state change
// WEAK <-> PINNED), linger, delete, put (growing the shards' tables, and
// shifting the entries after each new one's place one slot right) and
// delete again what they put (shifting entries back left), and the
// collector runs. Every answer must be one some moment of the
// object had: its own bytes and metadata, a state that agrees with its
// pins, and only ErrCollected or ErrDeleted as errors; and a Resolve that
// starts after a Delete returned says ErrDeleted, one after a Pin returned
// says PINNED.
func TestResolveWithoutLockRacingWriters(t *testing.T) {
	objects, rounds := 64, 40000
	if raceEnabled || testing.Short() {
		objects, rounds = 32, 4000
	}
	r := newRegistry(t, Config{})
	type object struct {
		info Info
		seed byte
	}
	objs := make([]object, objects)
	for i := range objs {
		meta := Meta{ContentType: fmt.Sprint("type-", i), Labels: map[string]string{"i": fmt.Sprint(i)}}
		if i%4 == 1 {
			meta.Linger = time.Hour
		}
		info, _ := put(t, r, 64+i, byte(i), meta, nil)
		objs[i] = object{info, byte(i)}
	}
	deadline := time.Now().Add(20 * time.Second)
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		failed   atomic.Bool
		failOnce sync.Once
	)
	fail := func(format string, args ...any) {
		failOnce.Do(func() { t.Errorf(format, args...) })
		failed.Store(true)
		stop.Store(true)
	}
	check := func(o object, obj Object, err error) {
		if err != nil {
			if !errors.Is(err, ErrCollected) && !errors.Is(err, ErrDeleted) {
				fail("Resolve of object %d: %v", o.seed, err)
			}
			return
		}
		in := obj.Info
		switch {
		case in.ID != o.info.ID || in.Handle != o.info.Handle || in.Size != o.info.Size:
			fail("object %d answered as %x %q size %d", o.seed, in.ID, in.Handle, in.Size)
		case int64(len(obj.Data)) != in.Size || obj.Data[0] != newPayload(1, o.seed)[0]:
			fail("object %d answered with another's bytes", o.seed)
		case in.ContentType != fmt.Sprint("type-", o.seed) || in.Labels["i"] != fmt.Sprint(o.seed):
			fail("object %d answered with metadata %q %v", o.seed, in.ContentType, in.Labels)
		case (in.State == Pinned) != (in.Pins > 0):
			fail("object %d %v with %d pins", o.seed, in.State, in.Pins)
		case (in.State == Lingering) == in.LingerUntil.IsZero():
			fail("object %d %v lingering until %v", o.seed, in.State, in.LingerUntil)
		case in.State != Pinned && in.State != Lingering && in.State != Weak:
			fail("object %d resolved in state %v", o.seed, in.State)
		}
	}
	for w := range 2 {
		wg.Add(1)
		go func() { // resolvers
			defer wg.Done()
			for i := 0; !stop.Load() && time.Now().Before(deadline); i++ {
				o := objs[(i*7+w)%len(objs)]
				obj, err := r.Resolve(o.info.Handle)
				check(o, obj, err)
			}
		}()
	}
	wg.Add(1)
	go func() { // pins, unpins, deletes
		defer wg.Done()
		defer stop.Store(true)
		by := newHolder(r)
		for i := range rounds {
			if stop.Load() || time.Now().After(deadline) {
				return
			}
			o := objs[i%len(objs)]
			switch i % 8 {
			case 7:
				if i/len(objs) == 2 { // once each, in the third pass
					if _, _, err := r.Delete(o.info.ID, true); err != nil && !errors.Is(err, ErrCollected) {
						fail("Delete: %v", err)
					}
					if _, err := r.Resolve(o.info.Handle); !errors.Is(err, ErrDeleted) && !errors.Is(err, ErrCollected) {
						fail("Resolve after Delete: %v, want ErrDeleted", err)
					}
				}
			default:
				if _, _, err := r.Pin(o.info.ID, by); err != nil {
					continue // collected or deleted
				}
				obj, err := r.Resolve(o.info.Handle)
				if err != nil || obj.Info.State != Pinned {
					fail("Resolve after Pin: %v %v, want PINNED", obj.Info.State, err)
				}
				check(o, obj, err)
				if _, _, err := r.Unpin(o.info.ID, by); err != nil {
					fail("Unpin: %v", err)
				}
			}
		}
	}()
	wg.Add(1)
	go func() { // puts that grow the tables, deletes of them, and collections
		defer wg.Done()
		var ids []handle.ID
		for i := 0; !stop.Load() && time.Now().Before(deadline); i++ {
			info, err := r.Put(newPayload(64, byte(i)), Meta{}, nil)
			if err != nil {
				fail("Put: %v", err)
				return
			}
			ids = append(ids, info.ID)
			if i%3 == 2 { // a third go again, from anywhere in the tables
				j := (i * 7919) % len(ids)
				if _, _, err := r.Delete(ids[j], true); err != nil && !errors.Is(err, ErrCollected) && !errors.Is(err, ErrDeleted) {
					fail("Delete of a put: %v", err)
				}
			}
			if i%256 == 0 {
				runtime.GC()
			}
		}
		runtime.KeepAlive(ids)
	}()
	wg.Wait()
	if failed.Load() {
		return
	}
	if hits := r.Stats().ResolveHits; hits == 0 {
		t.Fatal("no Resolve hit at all")
	}
}

// TestPeekFindsItsEntryWhileTheTableShifts holds peek to the table
// itself: a writer crowds a shard's table with entries whose IDs share a
// few homes, near the end of the slots as well, so that every insert
// shifts a long cluster right, deletes shift it back left, the table grows
// by half again and again and its spare past the last home runs out; and
// it changes the watched entries' fields in pairs. Readers peek the
// watched entries all the while: every answer is the watched entry itself
// with a pair written together, never a torn, stale or foreign one (and,
// with -race, peek reads no torn slice and no slot out of range).
func TestPeekFindsItsEntryWhileTheTableShifts(t *testing.T) {
	if !orderedLoads {
		t.Skip("peek declines on this architecture (peek_weak.go)")
	}
	rounds := 20000
	if raceEnabled || testing.Short() {
		rounds = 4000
	}
	rng := rand.New(rand.NewPCG(16, 4))
	const shardByte = 9
	newID := func(crowd bool) handle.ID {
		var id handle.ID
		k := rng.Uint64()
		if crowd {
			k = rng.Uint64N(4) << 2
			if rng.IntN(2) == 0 {
				k = ^k // at the end: clusters run into the spare
			}
		}
		id[0] = shardByte + byte(k>>62)<<6
		binary.BigEndian.PutUint64(id[1:9], k<<2)
		for i := 9; i < len(id); i++ {
			id[i] = byte(rng.Uint32())
		}
		return id
	}
	var s shard
	watched := make([]*entry, 16)
	s.lock()
	for i := range watched {
		watched[i] = &entry{id: newID(i%2 == 0), state: Pinned, npins: 1, stateSince: 1}
		s.m.put(watched[i])
	}
	s.unlock()
	deadline := time.Now().Add(20 * time.Second)
	var (
		wg     sync.WaitGroup
		done   atomic.Bool
		failed atomic.Bool
		hits   atomic.Int64
	)
	for w := range 2 {
		wg.Add(1)
		go func() { // readers
			defer wg.Done()
			var v entryView
			for i := w; !done.Load() && !failed.Load(); i++ {
				want := watched[i%len(watched)]
				e, ok := s.peek(want.id, &v)
				if !ok {
					continue
				}
				hits.Add(1)
				if e != want || v.state != Pinned || int64(v.npins) != v.stateSince {
					failed.Store(true)
					t.Errorf("peek(%x) = %p %v npins %d stateSince %d, want %p PINNED with the two equal",
						want.id, e, v.state, v.npins, v.stateSince, want)
				}
			}
		}()
	}
	var live []handle.ID
	for i := 0; i < rounds && !failed.Load() && time.Now().Before(deadline); i++ {
		s.lock()
		switch {
		case i%3 == 2 && len(live) > 0: // a delete: the cluster after it shifts left
			j := rng.IntN(len(live))
			s.m.del(live[j])
			live[j] = live[len(live)-1]
			live = live[:len(live)-1]
		default: // an insert: the cluster from its place shifts right, or the table grows
			id := newID(rng.IntN(4) == 0)
			s.m.put(&entry{id: id})
			live = append(live, id)
		}
		e := watched[i%len(watched)]
		e.npins = uint32(i + 2) // the pair readers check, written apart
		e.stateSince = int64(i + 2)
		s.unlock()
		if i%4 == 0 {
			runtime.Gosched() // let some peeks through whole
		}
	}
	done.Store(true)
	wg.Wait()
	var v entryView
	for _, e := range watched {
		if got, ok := s.peek(e.id, &v); !ok || got != e {
			t.Fatalf("peek(%x) after the writers = %p, %v; want %p", e.id, got, ok, e)
		}
	}
	if a := s.m.slots(); a.homes <= 8 {
		t.Fatalf("the table never grew: %d homes", a.homes)
	}
	t.Logf("%d peeks answered while the table changed; %d entries, %d homes, %d slots",
		hits.Load(), s.m.len(), s.m.slots().homes, len(s.m.slots().s))
}

// TestShardWritersGoThroughLock: peek trusts a shard only because every
// writer counts in its seq, which shard.lock does and mu.Lock does not. A
// write lock of a shard's mu taken directly in the package's code would
// let peek read a half-made change.
func TestShardWritersGoThroughLock(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	direct := regexp.MustCompile(`(\bs|\bsh|shards\[[^\]]*\])\.mu\.Lock\(\)`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			if direct.MatchString(line) && !strings.Contains(line, "TestShardWritersGoThroughLock") {
				t.Errorf("%s:%d takes a shard's write lock without shard.lock: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
