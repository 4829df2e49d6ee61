package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// The hand-off between processes: a producer puts an object, holds it,
// and lets go with a hand-off (CloseLease.handoff), so that the object
// stays LINGERING that long for a consumer process to pin.

const (
	handoff    = 2 * time.Second
	handoffArg = "2s"
	// clockSlack allows for the rounding of the timestamps registryd
	// reports, which the tests compare with their own clock readings.
	clockSlack = 50 * time.Millisecond
)

// holdingObjectsRE matches the line 'registryctl hold' prints once it
// holds its objects.
var holdingObjectsRE = regexp.MustCompile(`^holding (\d+) objects? under lease (lse_[A-Za-z0-9_-]{52}); interrupt \(Ctrl-C\) to release$`)

// ctlProduceAndHandOff is the producer, A: 'registryctl put FILE --hold
// --handoff 2s', interrupted once it holds the object. It checks that A
// exits 0, having printed the handle, that it closed its lease and that
// it handed the object off. It returns the handle, the bytes, and the
// times just before the interrupt and just after A's exit: the hand-off
// began between the two.
func ctlProduceAndHandOff(t *testing.T, addr string) (h string, data []byte, from, to time.Time) {
	t.Helper()
	data = randomBytes(4096)
	file := filepath.Join(t.TempDir(), "object.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startCtl(t, ctlOpts{addr: addr}, "put", file, "--hold", "--handoff", handoffArg, "--client-name", "e2e-producer")
	line := p.waitStderr(t, "holding ")
	m := holdingRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("put --hold said %q, want \"holding HANDLE under lease ID; ...\"", line)
	}
	h, leaseID := m[1], m[2]
	from = time.Now()
	r := p.interrupt(t)
	to = time.Now()
	wantExit(t, r, ctlOK)
	if got := strings.TrimSuffix(r.stdout, "\n"); got != h {
		t.Errorf("put --hold stdout = %q, want the handle %s", r.stdout, h)
	}
	want := []string{
		line,
		fmt.Sprintf("closed lease %s; released 1 pin", leaseID),
		"handed off: the objects stay held up to " + handoffArg + " (the server caps it) for another process to pin",
	}
	if got := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); !slices.Equal(got, want) {
		t.Fatalf("put --hold --handoff stderr lines = %q, want %q", got, want)
	}
	return h, data, from, to
}

// wantHandedOff checks, by Stat, that h is LINGERING with no pin, until a
// time that the hand-off begun between from and to explains, and returns
// that time.
func wantHandedOff(t *testing.T, c *client, h string, from, to time.Time) time.Time {
	t.Helper()
	resp, err := c.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
	if err != nil {
		t.Fatalf("Stat(%s) after the producer left: %v", h, err)
	}
	info := resp.GetInfo()
	if info.GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING || info.GetPinCount() != 0 || info.GetLingerUntil() == nil {
		t.Fatalf("after the hand-off, Stat(%s) = %v; want LINGERING, no pin, with linger_until", h, info)
	}
	until := info.GetLingerUntil().AsTime()
	if until.Before(from.Add(handoff-clockSlack)) || until.After(to.Add(handoff+clockSlack)) {
		t.Fatalf("linger_until = %v, want %v after the close, between %v and %v", until, handoff, from.Add(handoff), to.Add(handoff))
	}
	return until
}

// ctlGet checks that 'registryctl get h' writes exactly data.
func ctlGet(t *testing.T, addr, h string, data []byte) {
	t.Helper()
	r := ctl(t, addr, "get", h)
	wantSuccess(t, r)
	if r.stdout != string(data) {
		t.Fatalf("get %s wrote %d bytes that differ from the %d put", h, len(r.stdout), len(data))
	}
}

// ctlInspect runs 'registryctl inspect h -w json' and parses its answer.
func ctlInspect(t *testing.T, addr, h string) *registryv1.InspectObjectResponse {
	t.Helper()
	r := ctl(t, addr, "inspect", h, "-w", "json")
	wantSuccess(t, r)
	var resp registryv1.InspectObjectResponse
	decode(t, r, &resp)
	return &resp
}

// TestHandoffToAnotherProcess: A puts and holds an object, and exits with
// a 2s hand-off; B, started right after, pins it within the hand-off. The
// object survives forced collections during and past the hand-off while B
// holds it, and the collector takes it once B lets go.
func TestHandoffToAnotherProcess(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c := dial(t, d.Addr)

	h, data, from, to := ctlProduceAndHandOff(t, d.Addr)
	until := wantHandedOff(t, c, h, from, to)

	b := startCtl(t, ctlOpts{addr: d.Addr}, "hold", h, "--client-name", "e2e-consumer")
	m := holdingObjectsRE.FindStringSubmatch(b.waitStderr(t, "holding "))
	if m == nil || m[1] != "1" {
		t.Fatalf("hold: want \"holding 1 object under lease ID; ...\"; got %s", b.result())
	}
	leaseB := m[2]
	in := ctlInspect(t, d.Addr, h)
	if o := in.GetInfo(); o.GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || o.GetPinCount() != 1 || o.GetLingerUntil() != nil {
		t.Fatalf("inspect after B pinned = %v; want PINNED once, no longer lingering", o)
	}
	if ps := in.GetPins(); len(ps) != 1 || ps[0].GetLeaseId() != leaseB || ps[0].GetClientName() != "e2e-consumer" {
		t.Fatalf("pins after B pinned = %v; want only B's lease %s (e2e-consumer)", ps, leaseB)
	}

	// Forced collections while B holds it: a few now, then more until
	// one starts after the hand-off would have ended, when only B's pin
	// keeps it.
	for range 3 {
		wantExit(t, ctl(t, d.Addr, "gc"), ctlOK)
		ctlGet(t, d.Addr, h, data)
	}
	poll(t, waitTimeout, "a collection after the hand-off's end", func() bool {
		start := time.Now()
		collect(t, c)
		wantResolves(t, c, h, data)
		return start.After(until)
	})
	wantExit(t, ctl(t, d.Addr, "gc"), ctlOK)
	ctlGet(t, d.Addr, h, data)
	wantStat(t, c, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

	// B lets go (with no hand-off of its own); nothing holds the object.
	r := b.interrupt(t)
	wantExit(t, r, ctlOK)
	if got, want := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"),
		[]string{m[0], fmt.Sprintf("closed lease %s; released 1 pin", leaseB)}; !slices.Equal(got, want) {
		t.Fatalf("hold stderr lines = %q, want %q", got, want)
	}
	ctlWaitCollected(t, d.Addr, h)
}

// TestHandoffRunsOut: with nobody to take it, a handed-off object is
// LINGERING (inspect shows until when), survives a collection during the
// hand-off, becomes WEAK when the hand-off ends, and is collected then.
func TestHandoffRunsOut(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c := dial(t, d.Addr)

	h, data, from, to := ctlProduceAndHandOff(t, d.Addr)
	in := ctlInspect(t, d.Addr, h)
	o := in.GetInfo()
	if o.GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING || o.GetPinCount() != 0 || len(in.GetPins()) != 0 || o.GetLingerUntil() == nil {
		t.Fatalf("inspect after the hand-off = %v; want LINGERING, no pin, with linger_until", in)
	}
	until := o.GetLingerUntil().AsTime()
	if until.Before(from.Add(handoff-clockSlack)) || until.After(to.Add(handoff+clockSlack)) {
		t.Fatalf("linger_until = %v, want %v after the close, between %v and %v", until, handoff, from.Add(handoff), to.Add(handoff))
	}
	if since := o.GetStateTime().AsTime(); since.Before(from.Add(-clockSlack)) || since.After(to.Add(clockSlack)) {
		t.Errorf("state_time = %v, want the close, between %v and %v", since, from, to)
	}

	// A collection during the hand-off keeps it.
	wantExit(t, ctl(t, d.Addr, "gc"), ctlOK)
	ctlGet(t, d.Addr, h, data)
	if !time.Now().Before(until) {
		t.Fatalf("the collection and get took until after the hand-off's end (%v): too slow to tell", until)
	}
	wantStat(t, c, h, registryv1.ObjectState_OBJECT_STATE_LINGERING, 0)

	// It stays LINGERING until linger_until, then becomes WEAK (and may
	// be collected by registryd's own GC from then on).
	poll(t, handoff+waitTimeout, h+" to become weak", func() bool {
		resp, err := c.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
		seen := time.Now()
		if err != nil {
			wantStatus(t, err, codes.NotFound, "OBJECT_COLLECTED")
		} else if s := resp.GetInfo().GetState(); s == registryv1.ObjectState_OBJECT_STATE_LINGERING {
			return false
		} else if s != registryv1.ObjectState_OBJECT_STATE_WEAK {
			t.Fatalf("Stat(%s) = %v, want LINGERING then WEAK", h, resp.GetInfo())
		} else if since := resp.GetInfo().GetStateTime().AsTime(); since.Before(until.Add(-clockSlack)) {
			t.Fatalf("%s became WEAK at %v, before its hand-off ended at %v", h, since, until)
		}
		if seen.Before(until.Add(-clockSlack)) {
			t.Fatalf("%s was no longer LINGERING at %v, before its hand-off ended at %v", h, seen, until)
		}
		return true
	})
	ctlWaitCollected(t, d.Addr, h)
}

// TestClientHandoff: the Go client's UnpinWithHandoff and
// CloseWithHandoff, with registryd capping the hand-off at its
// --max-linger; a second lease takes an object within its hand-off, and
// each object is collected once its hand-off is over and nobody pins it.
func TestClientHandoff(t *testing.T) {
	t.Parallel()
	const maxLinger = time.Second
	d := startDaemon(t, "--max-linger", maxLinger.String())
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)

	producer := openClientLease(t, ctx, c, regclient.LeaseName("e2e-handoff-producer"))
	var handles []string
	objects := map[string][]byte{}
	for range 2 {
		data := randomBytes(2048)
		info, err := c.Put(ctx, data, regclient.PinnedBy(producer))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		handles = append(handles, info.Handle)
		objects[info.Handle] = data
	}
	passed, kept := handles[0], handles[1]

	// An hour asked for, a second granted.
	before := time.Now()
	rs, err := producer.UnpinWithHandoff(ctx, time.Hour, passed)
	after := time.Now()
	if err != nil {
		t.Fatalf("UnpinWithHandoff: %v", err)
	}
	if len(rs) != 1 || rs[0].Outcome != regclient.OutcomeUnpinned || rs[0].Info.State != regclient.StateLingering || rs[0].Info.PinCount != 0 {
		t.Fatalf("UnpinWithHandoff results = %+v, want %s unpinned, lingering", rs, passed)
	}
	passedUntil := rs[0].Info.LingerUntil
	if passedUntil.Before(before.Add(maxLinger-clockSlack)) || passedUntil.After(after.Add(maxLinger+clockSlack)) {
		t.Fatalf("LingerUntil = %v, want the hand-off capped at --max-linger %v: between %v and %v", passedUntil, maxLinger, before.Add(maxLinger), after.Add(maxLinger))
	}

	// The consumer takes it within the hand-off.
	consumer := openClientLease(t, ctx, c, regclient.LeaseName("e2e-handoff-consumer"))
	if rs, err := consumer.Pin(ctx, passed); err != nil || rs[0].Outcome != regclient.OutcomePinned || rs[0].Info.State != regclient.StatePinned {
		t.Fatalf("consumer Pin = %+v, %v; want pinned", rs, err)
	}

	before = time.Now()
	n, err := producer.CloseWithHandoff(ctx, time.Hour)
	after = time.Now()
	if err != nil || n != 1 {
		t.Fatalf("CloseWithHandoff = %d, %v; want 1 released", n, err)
	}
	st, err := c.Stat(ctx, kept)
	if err != nil || st.State != regclient.StateLingering || st.PinCount != 0 {
		t.Fatalf("Stat after CloseWithHandoff = %+v, %v; want lingering, unpinned", st, err)
	}
	keptUntil := st.LingerUntil
	if keptUntil.Before(before.Add(maxLinger-clockSlack)) || keptUntil.After(after.Add(maxLinger+clockSlack)) {
		t.Fatalf("LingerUntil = %v, want the hand-off capped at --max-linger %v: between %v and %v", keptUntil, maxLinger, before.Add(maxLinger), after.Add(maxLinger))
	}
	collect(t, admin)
	for h, data := range objects {
		wantClientResolves(t, ctx, c, h, data)
	}

	// Once its hand-off is over, the closed lease's object is weak: the
	// collector takes it.
	poll(t, maxLinger+waitTimeout, kept+" to stop lingering", func() bool {
		st, err := c.Stat(ctx, kept)
		seen := time.Now()
		if err != nil && !errors.Is(err, regclient.ErrCollected) {
			t.Fatalf("Stat(%s): %v", kept, err)
		}
		if err == nil && st.State == regclient.StateLingering {
			return false
		}
		if seen.Before(keptUntil.Add(-clockSlack)) {
			t.Fatalf("%s stopped lingering at %v, before its hand-off ended at %v", kept, seen, keptUntil)
		}
		return true
	})
	collect(t, admin)
	_, _, err = c.Resolve(ctx, kept)
	wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")

	// The consumer still holds the other; its hand-off is over too, so
	// once the consumer lets go the collector takes it.
	wantClientResolves(t, ctx, c, passed, objects[passed])
	if n, err := consumer.Close(ctx); err != nil || n != 1 {
		t.Fatalf("consumer Close = %d, %v; want 1 released", n, err)
	}
	collect(t, admin)
	_, _, err = c.Resolve(ctx, passed)
	wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
}
