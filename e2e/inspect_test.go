package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// inTime checks that ts, a time registryd reported, lies between from and
// to, read from the test's clock around the call that set it.
func inTime(t *testing.T, what string, ts, from, to time.Time) {
	t.Helper()
	if ts.Before(from.Add(-clockSlack)) || ts.After(to.Add(clockSlack)) {
		t.Errorf("%s = %v, want between %v and %v", what, ts, from, to)
	}
}

// TestInspectWhyAlive: 'registryctl inspect' tells why an object is alive:
// for a pinned one, the leases that pin it, with their clients and pin
// times; for a lingering one, its linger and until when; for a weak one,
// how many collections it survived, and that it is no suspected leak when
// the soft cache is what holds it.
func TestInspectWhyAlive(t *testing.T) {
	t.Parallel()
	const leakCycles = 3 // registryd's default --leak-gc-cycles
	d := startDaemon(t, "--soft-cache-bytes", "1MiB")
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	inspectTable := func(t *testing.T, h string) [][]string {
		t.Helper()
		r := ctl(t, d.Addr, "inspect", h)
		wantSuccess(t, r)
		return tableRows(r.stdout)
	}

	t.Run("pinned", func(t *testing.T) {
		a := openClientLease(t, ctx, c, regclient.LeaseName("e2e-why-a"))
		b := openClientLease(t, ctx, c, regclient.LeaseName("e2e-why-b"))
		t0 := time.Now()
		info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(a))
		t1 := time.Now()
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		h := info.Handle
		if rs, err := b.Pin(ctx, h); err != nil || rs[0].Outcome != regclient.OutcomePinned {
			t.Fatalf("Pin = %+v, %v", rs, err)
		}
		t2 := time.Now()

		in := ctlInspect(t, d.Addr, h)
		o := in.GetInfo()
		if o.GetHandle() != h || o.GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || o.GetPinCount() != 2 ||
			o.GetLinger() != nil || o.GetLingerUntil() != nil || o.GetSoftCached() || o.GetWeakGcCycles() != 0 || o.GetSuspectedLeak() {
			t.Fatalf("inspect info = %v; want PINNED twice, no linger, not soft-cached, no GC cycles, no suspected leak", o)
		}
		ps := in.GetPins()
		if len(ps) != 2 {
			t.Fatalf("inspect pins = %v; want two, oldest first", ps)
		}
		for i, want := range []struct {
			lease    *regclient.Lease
			client   string
			from, to time.Time
		}{{a, "e2e-why-a", t0, t1}, {b, "e2e-why-b", t1, t2}} {
			if ps[i].GetLeaseId() != want.lease.ID() || ps[i].GetClientName() != want.client {
				t.Errorf("pin %d = %v; want lease %s of %s", i, ps[i], want.lease.ID(), want.client)
			}
			inTime(t, "pin_time of "+want.client, ps[i].GetPinTime().AsTime(), want.from, want.to)
		}

		rows := inspectTable(t, h)
		if r := rowOf(rows, "PINS"); !slices.Equal(r, []string{"PINS", "2"}) {
			t.Errorf("PINS row = %q, want 2", r)
		}
		if rowOf(rows, "PINNED") == nil {
			t.Errorf("no PINNED BY header in the table:\n%v", rows)
		}
		for _, l := range []*regclient.Lease{a, b} {
			if r := rowOf(rows, l.ID()); len(r) < 2 || !strings.HasPrefix(r[1], "e2e-why-") {
				t.Errorf("row of lease %s = %q, want its client name", l.ID(), r)
			}
		}
		for _, absent := range []string{"LINGER", "WEAK", "SOFT", "GC", "SUSPECTED"} {
			if r := rowOf(rows, absent); r != nil {
				t.Errorf("a pinned object's table has the row %q", r)
			}
		}
	})

	t.Run("lingering", func(t *testing.T) {
		t0 := time.Now()
		info, err := c.Put(ctx, randomBytes(1024), regclient.Linger(time.Minute))
		t1 := time.Now()
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		h := info.Handle
		in := ctlInspect(t, d.Addr, h)
		o := in.GetInfo()
		if o.GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING || o.GetPinCount() != 0 || len(in.GetPins()) != 0 ||
			o.GetLinger().AsDuration() != time.Minute || o.GetLingerUntil() == nil || o.GetWeakGcCycles() != 0 || o.GetSuspectedLeak() {
			t.Fatalf("inspect = %v; want LINGERING, no pin, linger 1m with linger_until, no GC cycles, no suspected leak", in)
		}
		inTime(t, "linger_until", o.GetLingerUntil().AsTime(), t0.Add(time.Minute), t1.Add(time.Minute))
		inTime(t, "state_time", o.GetStateTime().AsTime(), t0, t1)

		rows := inspectTable(t, h)
		if r := rowOf(rows, "LINGER"); !slices.Equal(r, strings.Fields("LINGER 1m after its last pin goes")) {
			t.Errorf("LINGER row = %q", r)
		}
		if r := rowOf(rows, "WEAK"); len(r) != 5 || r[1] != "AT" || r[3] != "(in" {
			t.Errorf("WEAK AT row = %q, want \"WEAK AT TIME (in DURATION)\"", r)
		}
		for _, absent := range []string{"GC", "SUSPECTED", "PINNED"} {
			if r := rowOf(rows, absent); r != nil {
				t.Errorf("a lingering object's table has the row %q", r)
			}
		}
	})

	t.Run("weak", func(t *testing.T) {
		// Pinned while it is resolved, so that the soft cache takes it in;
		// then, unpinned, it is WEAK and the cache alone keeps it alive.
		l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-why-weak"))
		data := randomBytes(1024)
		info, err := c.Put(ctx, data, regclient.PinnedBy(l))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		h := info.Handle
		if got := wantClientResolves(t, ctx, c, h, data); !got.SoftCached {
			t.Fatalf("Resolve info = %+v, want soft-cached", got)
		}
		if n, err := l.Close(ctx); err != nil || n != 1 {
			t.Fatalf("Close = %d, %v; want 1 released", n, err)
		}

		// Forced collections until it has survived more than
		// --leak-gc-cycles of them: held by the cache, it is no leak.
		var o *registryv1.ObjectInfo
		poll(t, waitTimeout, h+" to survive "+strconv.Itoa(leakCycles)+" collections", func() bool {
			collect(t, admin)
			resp, err := admin.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: h})
			if err != nil {
				t.Fatalf("InspectObject(%s): %v", h, err)
			}
			o = resp.GetInfo()
			return o.GetWeakGcCycles() >= leakCycles
		})

		in := ctlInspect(t, d.Addr, h)
		o = in.GetInfo()
		if o.GetState() != registryv1.ObjectState_OBJECT_STATE_WEAK || o.GetPinCount() != 0 || len(in.GetPins()) != 0 ||
			!o.GetSoftCached() || o.GetWeakGcCycles() < leakCycles || o.GetSuspectedLeak() || o.GetLingerUntil() != nil {
			t.Fatalf("inspect = %v; want WEAK, no pin, soft-cached, at least %d GC cycles, no suspected leak", in, leakCycles)
		}
		rows := inspectTable(t, h)
		if r := rowOf(rows, "SOFT"); len(r) < 3 || r[1] != "CACHED" || r[2] != "yes:" {
			t.Errorf("SOFT CACHED row = %q, want yes", r)
		}
		if r := rowOf(rows, "GC"); len(r) < 3 || r[1] != "CYCLES" {
			t.Errorf("GC CYCLES row = %q", r)
		} else if n, err := strconv.Atoi(r[2]); err != nil || n < leakCycles || strings.Join(r[3:], " ") != "survived since it became weak" {
			t.Errorf("GC CYCLES row = %q, want at least %d survived since it became weak", r, leakCycles)
		}
		for _, absent := range []string{"SUSPECTED", "LINGER", "PINNED"} {
			if r := rowOf(rows, absent); r != nil {
				t.Errorf("a soft-cached weak object's table has the row %q", r)
			}
		}

		r := ctl(t, d.Addr, "ls", "--suspect-leaks", "-w", "json")
		wantSuccess(t, r)
		var ls registryv1.ListObjectsResponse
		decode(t, r, &ls)
		if len(ls.GetObjects()) != 0 {
			t.Errorf("ls --suspect-leaks = %v, want none", ls.GetObjects())
		}
		st, err := admin.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
		if err != nil {
			t.Fatalf("GetStats: %v", err)
		}
		if st.GetSuspectedLeaks() != 0 {
			t.Errorf("stats suspected_leaks = %d, want 0", st.GetSuspectedLeaks())
		}
	})
}
