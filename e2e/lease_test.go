package e2e

import (
	"crypto/rand"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestGraceAndResumeEndToEnd: a lease opened with a grace outlives its
// stream, pins intact, and a new stream on a new connection resumes it; a
// lease nobody resumes is released when its grace runs out.
func TestGraceAndResumeEndToEnd(t *testing.T) {
	t.Run("resumed within its grace keeps its pins", func(t *testing.T) {
		d := startDaemon(t)
		c := dial(t, d.Addr)
		data := randomBytes(2048)
		l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-grace", Grace: durationpb.New(30 * time.Second)})
		if got := l.opened.GetGrace().AsDuration(); got != 30*time.Second {
			t.Fatalf("opened.grace = %v, want 30s", got)
		}
		h := put(t, c, data, l.ID())

		cut := time.Now()
		l.cancel() // the stream drops, as on a network blip
		info := waitLease(t, c, l.ID(), waitTimeout, "the lease to be listed detached",
			func(li *registryv1.LeaseInfo) bool { return li != nil && !li.GetAttached() })
		if info.GetPinCount() != 1 || info.GetGrace().AsDuration() != 30*time.Second {
			t.Errorf("detached lease = %v, want pin_count 1, grace 30s", info)
		}
		if info.GetExpireTime() == nil {
			t.Fatalf("detached lease has no expire_time: %v", info)
		}
		if exp := info.GetExpireTime().AsTime(); exp.Before(cut.Add(25*time.Second)) || exp.After(time.Now().Add(31*time.Second)) {
			t.Errorf("expire_time = %v, want about 30s after the cut at %v", exp, cut)
		}

		if rep := collect(t, c); rep.GetCollectedObjects() != 0 {
			t.Errorf("Collect while the lease is detached freed %d objects, want 0", rep.GetCollectedObjects())
		}
		wantResolves(t, c, h, data)
		wantStat(t, c, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

		c2 := dial(t, d.Addr)
		l2 := openLease(t, c2, &registryv1.OpenLease{ClientName: "e2e-grace", ResumeLeaseId: l.ID()})
		if o := l2.opened; o.GetLeaseId() != l.ID() || !o.GetResumed() || o.GetPinCount() != 1 {
			t.Fatalf("resume opened = %v, want lease %s resumed with pin_count 1", o, l.ID())
		}
		wantStat(t, c2, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)
		if li := findLease(t, c2, l.ID()); li == nil || !li.GetAttached() || li.GetExpireTime() != nil {
			t.Errorf("resumed lease as listed = %v, want attached with no expire_time", li)
		}
		l2.close(t, 1)
	})

	t.Run("not resumed, released when its grace runs out", func(t *testing.T) {
		d := startDaemon(t)
		c := dial(t, d.Addr)
		data := randomBytes(2048)
		l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-grace", Grace: durationpb.New(time.Second)})
		h := put(t, c, data, l.ID())

		l.cancel()
		waitLease(t, c, l.ID(), waitTimeout, "the detached lease to expire",
			func(li *registryv1.LeaseInfo) bool { return li == nil })
		collect(t, c)
		wantGone(t, c, h, codes.NotFound, "OBJECT_COLLECTED")
	})
}

// TestRevokeEndToEnd: an operator revokes a lease; its holder is told why
// and its stream ends; its object becomes collectable. Revoking what is no
// lease of this registry fails clearly.
func TestRevokeEndToEnd(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.Addr)
	data := randomBytes(2048)
	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-revoke", Grace: durationpb.New(time.Minute)})
	h := put(t, c, data, l.ID())

	const reason = "e2e: maintenance window"
	resp, err := c.admin.RevokeLease(rpcCtx(t), &registryv1.RevokeLeaseRequest{LeaseId: l.ID(), Reason: reason})
	if err != nil {
		t.Fatalf("RevokeLease: %v", err)
	}
	if resp.GetReleased() != 1 {
		t.Errorf("RevokeLease released %d, want 1", resp.GetReleased())
	}
	msg := l.in.mustNext(t)
	rv := msg.GetRevoked()
	if rv == nil || msg.GetRequestId() != 0 {
		t.Fatalf("lease stream got %v, want revoked with request_id 0", msg)
	}
	if rv.GetCause() != registryv1.RevokeCause_REVOKE_CAUSE_ADMIN || rv.GetReason() != reason || rv.GetReleased() != 1 {
		t.Errorf("revoked = %v, want cause ADMIN, reason %q, released 1", rv, reason)
	}
	l.wantEOF(t)

	// The grace does not apply to a revoke: the lease is gone at once.
	if li := findLease(t, c, l.ID()); li != nil {
		t.Errorf("revoked lease is still listed: %v", li)
	}
	collect(t, c)
	wantGone(t, c, h, codes.NotFound, "OBJECT_COLLECTED")

	t.Run("the same lease again", func(t *testing.T) {
		_, err := c.admin.RevokeLease(rpcCtx(t), &registryv1.RevokeLeaseRequest{LeaseId: l.ID()})
		wantStatus(t, err, codes.NotFound, "LEASE_NOT_FOUND")
	})
	t.Run("a lease of another registryd", func(t *testing.T) {
		// Another run with its own random key: the id is well-formed but
		// its MAC does not verify here.
		other := dial(t, startDaemon(t).Addr)
		foreign := openLease(t, other, &registryv1.OpenLease{ClientName: "e2e-foreign"})
		_, err := c.admin.RevokeLease(rpcCtx(t), &registryv1.RevokeLeaseRequest{LeaseId: foreign.ID()})
		wantStatus(t, err, codes.NotFound, "LEASE_NOT_FOUND")
		foreign.close(t, 0)
	})
	t.Run("a malformed id", func(t *testing.T) {
		_, err := c.admin.RevokeLease(rpcCtx(t), &registryv1.RevokeLeaseRequest{LeaseId: "lse_nope"})
		wantStatus(t, err, codes.InvalidArgument, "LEASE_ID_MALFORMED")
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
