package registry

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
)

// holderOf mints a lease id owned by identity who.
func holderOf(r *Registry, who string) Holder {
	h := newHolder(r)
	h.Identity = who
	return h
}

// wantHeld checks the strongly held bytes: in total, and charged to each
// identity named (0 means it has no account left, or none charged).
func wantHeld(t testing.TB, r *Registry, total int64, per map[string]int64) {
	t.Helper()
	if got := r.HeldBytes(); got != total {
		t.Errorf("held bytes %d, want %d", got, total)
	}
	for who, want := range per {
		if got, _ := r.IdentityHeld(who); got != want {
			t.Errorf("%s is charged %d bytes, want %d", who, got, want)
		}
	}
}

// wantIdentityLimit checks that err is IDENTITY_PINNED_BYTES_LIMIT of who.
func wantIdentityLimit(t testing.TB, err error, who string, ceiling, want int64) {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("error = %v (%T); want *LimitError", err, err)
	}
	if *le != (LimitError{Limit: LimitIdentityPinnedBytes, Max: ceiling, Want: want, Identity: who}) {
		t.Fatalf("LimitError = %+v; want %s of %s, max %d want %d", *le, LimitIdentityPinnedBytes, who, ceiling, want)
	}
}

// TestIdentityPinnedBytesLimit: the bytes an identity's acts hold
// strongly (Put with a lease or a linger, Pin of a WEAK object) are
// charged to it, up to MaxPinnedBytesPerIdentity: at the limit succeeds,
// one past is refused naming the identity and changes nothing. Another
// identity and anonymous are not held back; a LINGERING object keeps its
// charge when pinned again by someone else; WEAK and Delete give it back.
func TestIdentityPinnedBytesLimit(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{MaxPinnedBytes: 1000, MaxPinnedBytesPerIdentity: 100})
	alice, bob, anon := holderOf(r, "alice"), holderOf(r, "bob"), holderOf(r, auth.AnonymousName)
	owner := func(who string) Meta { return Meta{Owner: who} }

	p60, _ := put(t, r, 60, 1, owner("alice"), &alice)
	l40, _ := put(t, r, 40, 2, Meta{Owner: "alice", Linger: time.Hour}, nil) // lingering: hers too
	wantHeld(t, r, 100, map[string]int64{"alice": 100})

	tests := []struct {
		name string
		try  func() error
		want int64
	}{
		{"Put with a lease", func() error { _, err := r.Put(newPayload(1, 3), owner("alice"), &alice); return err }, 101},
		{"Put with a linger", func() error {
			_, err := r.Put(newPayload(5, 3), Meta{Owner: "alice", Linger: time.Hour}, nil)
			return err
		}, 105},
		{"Pin of a WEAK object", func() error {
			w, _ := put(t, r, 7, 4, owner("bob"), nil)
			_, _, err := r.Pin(w.ID, alice)
			if info, serr := r.Stat(w.Handle); serr != nil || info.State != Weak || info.Pins != 0 {
				t.Errorf("after a refused Pin: %v with %d pins, %v; want WEAK with 0", info.State, info.Pins, serr)
			}
			return err
		}, 107},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := statsSnapshot(r)
			err := tt.try()
			wantIdentityLimit(t, err, "alice", 100, tt.want)
			if after := statsSnapshot(r); after.HeldBytes != before.HeldBytes || after.Pins != before.Pins || after.Bytes[Pinned] != before.Bytes[Pinned] {
				t.Errorf("the refusal changed the stats:\nbefore %+v\nafter  %+v", before, after)
			}
			wantHeld(t, r, 100, map[string]int64{"alice": 100, "bob": 0})
		})
	}

	// Others are not held back by alice's limit.
	b90, _ := put(t, r, 90, 5, owner("bob"), &bob)
	a500, _ := put(t, r, 500, 6, owner(auth.AnonymousName), &anon)
	wantHeld(t, r, 690, map[string]int64{"alice": 100, "bob": 90, auth.AnonymousName: 0})

	// Bob pins alice's lingering object: it stays hers, nothing for bob.
	mustPin(t, r, l40.ID, bob)
	wantHeld(t, r, 690, map[string]int64{"alice": 100, "bob": 90})
	mustUnpin(t, r, l40.ID, bob) // lingering again, still hers
	wantHeld(t, r, 690, map[string]int64{"alice": 100, "bob": 90})

	// WEAK gives the charge back; a Pin of it is then bob's act.
	mustUnpin(t, r, p60.ID, alice)
	wantHeld(t, r, 630, map[string]int64{"alice": 40, "bob": 90})
	_, _, err := r.Pin(p60.ID, bob)
	wantIdentityLimit(t, err, "bob", 100, 150)
	mustPin(t, r, p60.ID, alice)
	wantHeld(t, r, 690, map[string]int64{"alice": 100})

	// Delete gives back whatever it held, pinned or lingering.
	for _, info := range []Info{p60, l40, b90, a500} {
		if _, _, err := r.Delete(info.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	wantHeld(t, r, 0, map[string]int64{"alice": 0, "bob": 0})
	if st := r.Stats(); st.MaxPinnedBytesPerIdentity != 100 {
		t.Errorf("Stats.MaxPinnedBytesPerIdentity = %d", st.MaxPinnedBytesPerIdentity)
	}
	r.Collect()
	assertHoldsNothing(t, r)
}

// TestObjectsRememberTheirOwner: Info.Owner is who put the object, however
// it was put and whoever pins it since; the name is shared, not copied,
// and forgotten once its last object goes.
func TestObjectsRememberTheirOwner(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	bob := holderOf(r, "bob")
	a1, _ := put(t, r, 10, 1, Meta{Owner: "alice"}, nil)
	a2, _ := put(t, r, 10, 2, Meta{Owner: "alice", Linger: time.Hour}, &bob)
	if a1.Owner != "alice" || a2.Owner != "alice" {
		t.Fatalf("owners %q, %q; want alice", a1.Owner, a2.Owner)
	}
	if got := mustPin(t, r, a1.ID, bob); got.Owner != "alice" {
		t.Errorf("after bob's pin the owner is %q", got.Owner)
	}
	if e := r.entryOf(a1.ID); e.owner != r.entryOf(a2.ID).owner {
		t.Error("two objects of one owner have two accounts")
	}
	if n := r.accounts.count(); n != 2 { // alice owns both; bob pays for his pin of a WEAK one
		t.Errorf("%d accounts, want 2 (alice, bob)", n)
	}
	for _, info := range []Info{a1, a2} {
		if _, _, err := r.Delete(info.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	assertHoldsNothing(t, r)
}

func (r *Registry) entryOf(id handle.ID) *entry {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m.get(id)
}

// TestEveryChargeIsReleasedExactlyOnce: identities put, pin, unpin with
// hand-offs, linger and force-delete concurrently while the collector
// runs; whatever the path an object leaves the strongly held state by
// (unpin, linger or hand-off expiry, delete), its charge goes back once:
// during the run no account is ever negative, and once every pin is
// released and every linger over, every identity's account and the
// global count are 0 and no account is left.
func TestEveryChargeIsReleasedExactlyOnce(t *testing.T) {
	const (
		workers  = 6
		maxOps   = 4000
		duration = time.Second
	)
	if testing.Short() {
		t.Skip("a 1 s load test")
	}
	names := []string{"alice", "bob", "carol", auth.AnonymousName}
	r := newRegistry(t, Config{MaxPinnedBytes: 1 << 20, MaxPinnedBytesPerIdentity: 64 << 10})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	deadline := time.Now().Add(duration)
	var (
		mu   sync.Mutex
		objs []handle.ID // every object put, for anyone to pin or delete
	)
	pick := func(rng *rand.Rand) (handle.ID, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(objs) == 0 {
			return handle.ID{}, false
		}
		return objs[rng.IntN(len(objs))], true
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			who := names[w%len(names)]
			by := holderOf(r, who)
			held := map[handle.ID]bool{}
			for i := 0; i < maxOps && time.Now().Before(deadline); i++ {
				switch op := rng.IntN(10); {
				case op < 3:
					meta := Meta{Owner: who}
					if rng.IntN(2) == 0 {
						meta.Linger = time.Duration(rng.IntN(3)) * time.Millisecond
					}
					var h *Holder
					if rng.IntN(2) == 0 {
						h = &by
					}
					info, err := r.Put(newPayload(1+rng.IntN(2048), byte(i)), meta, h)
					if err != nil {
						var le *LimitError
						if !errors.As(err, &le) {
							t.Errorf("Put: %v", err)
						}
						continue
					}
					if h != nil {
						held[info.ID] = true
					}
					mu.Lock()
					objs = append(objs, info.ID)
					mu.Unlock()
				case op < 6:
					if id, ok := pick(rng); ok && !held[id] {
						if _, _, err := r.Pin(id, by); err == nil {
							held[id] = true
						}
					}
				case op < 9:
					for id := range held {
						r.UnpinHandoff(id, by, time.Duration(rng.IntN(3))*time.Millisecond)
						delete(held, id)
						break
					}
				default:
					if id, ok := pick(rng); ok {
						r.Delete(id, true)
						delete(held, id) // its pins went with it
					}
				}
				for _, n := range names {
					if v, _ := r.IdentityHeld(n); v < 0 {
						t.Errorf("%s's account is %d", n, v)
					}
				}
				if v := r.HeldBytes(); v < 0 {
					t.Errorf("held bytes %d", v)
				}
			}
			for id := range held {
				r.Unpin(id, by)
			}
		})
	}
	wg.Go(func() {
		for time.Now().Before(deadline) {
			r.Collect()
		}
	})
	wg.Wait()
	waitFor(t, 10*time.Second, "strongly held bytes or accounts left after every pin and linger ended", func() bool {
		r.Collect()
		return r.HeldBytes() == 0 && r.accounts.count() == 0
	})
	for _, n := range names {
		if v, ok := r.IdentityHeld(n); v != 0 || ok {
			t.Errorf("%s: %d bytes charged (account kept: %v)", n, v, ok)
		}
	}
	assertHoldsNothing(t, r)
}

// TestMetadataCountsWithThePayload: an object's content type and labels
// are kept as long as it is, so they count with its payload against the
// limits on strongly held bytes, from Put to WEAK and back: many pinned
// objects of one byte with large labels cannot hold more than the limit
// says.
func TestMetadataCountsWithThePayload(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{MaxPinnedBytes: 100, MaxPinnedBytesPerIdentity: 50})
	alice := holderOf(r, "alice")
	meta := Meta{Owner: "alice", ContentType: "text/plain", Labels: map[string]string{"team": "search"}} // 10 + 4 + 6 bytes
	info, err := r.Put(newPayload(1, 1), meta, &alice)
	if err != nil {
		t.Fatal(err)
	}
	wantHeld(t, r, 21, map[string]int64{"alice": 21})
	if _, err := r.Put(newPayload(1, 2), meta, &alice); err != nil { // 42 of 50
		t.Fatal(err)
	}
	_, err = r.Put(newPayload(9, 3), meta, &alice) // 42 + 29 > 50
	wantIdentityLimit(t, err, "alice", 50, 71)
	wantHeld(t, r, 42, map[string]int64{"alice": 42})
	if st := r.Stats(); st.Bytes[Pinned] != 2 {
		t.Errorf("stats count the payloads only: %d pinned bytes, want 2", st.Bytes[Pinned])
	}
	mustUnpin(t, r, info.ID, alice) // WEAK: the whole charge comes back
	wantHeld(t, r, 21, map[string]int64{"alice": 21})
	mustPin(t, r, info.ID, alice)
	wantHeld(t, r, 42, map[string]int64{"alice": 42})
}
