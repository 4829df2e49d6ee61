package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// limitRun is one row's registry: a world (whose anonymous bystander pins
// 21 bytes with one lease), carol's lease pinning 13 more, and a lease per
// caller, opened when a row first asks for it.
type limitRun struct {
	w      *world
	carol  *leaseClient
	carols string // the object carol's lease pins
	leases map[string]*leaseClient
	objs   []string // objects a row's setup put
}

const carolsData = "carol's bytes"

func newLimitRun(t *testing.T, l *Limits) *limitRun {
	r := &limitRun{w: newWorldWith(t, envOptions{limits: l}), leases: map[string]*leaseClient{}}
	r.carol = r.w.e.openLeaseCtx(t, asIdentity(t, "carol"), "carol's", time.Minute)
	resp, err := r.w.e.rs.Put(asIdentity(t, "carol"), &registryv1.PutRequest{Data: []byte(carolsData), LeaseId: r.carol.id})
	if err != nil {
		t.Fatal(err)
	}
	r.carols = resp.GetHandle()
	return r
}

// lease is who's lease ("" anonymous), opened on first use.
func (r *limitRun) lease(t *testing.T, who string) *leaseClient {
	t.Helper()
	if lc, ok := r.leases[who]; ok {
		return lc
	}
	lc := r.w.e.openLeaseCtx(t, callerCtx(t, who), who+"'s", time.Minute)
	r.leases[who] = lc
	return lc
}

// checkCarol fails unless carol's object still resolves with its one pin
// and her lease still answers that it holds it.
func (r *limitRun) checkCarol(t *testing.T) {
	t.Helper()
	resp, err := r.w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: r.carols})
	if err != nil || string(resp.GetData()) != carolsData || resp.GetInfo().GetPinCount() != 1 {
		t.Fatalf("carol's object: %q with %d pins, %v", resp.GetData(), resp.GetInfo().GetPinCount(), err)
	}
	if res := r.carol.pin(r.carols); res[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED {
		t.Fatalf("carol's lease: pin answered %v", res[0])
	}
}

// putAs stores n bytes as who, into lease id if not "", lingering a
// minute if linger.
func (r *limitRun) putAs(t *testing.T, who string, n int, id string, linger bool) error {
	req := &registryv1.PutRequest{Data: make([]byte, n), LeaseId: id}
	if linger {
		req.Linger = durationpb.New(time.Minute)
	}
	_, err := r.w.e.rs.Put(callerCtx(t, who), req)
	return err
}

// openAs opens a lease as who on a stream of its own, which stays open.
func (r *limitRun) openAs(t *testing.T, who string) error {
	resp, err := r.w.e.leaseStreamCtx(t, callerCtx(t, who)).try(openReq(""))
	if err == nil && resp.GetOpened() == nil {
		return fmt.Errorf("open answered %v", resp)
	}
	return err
}

// watchAs opens a Watch as who and waits until it is in place: its
// headers came and GetStats counts one watcher more; else it returns the
// stream's status.
func (r *limitRun) watchAs(t *testing.T, who string) error {
	watchers := limitUsed(t, r.w.e, ReasonWatcherLimit)
	s, err := r.w.e.rs.Watch(callerCtx(t, who), &registryv1.WatchRequest{Handles: []string{r.w.weak}})
	if err != nil {
		return err
	}
	if _, err := s.Header(); err != nil {
		return err
	}
	if limitUsed(t, r.w.e, ReasonWatcherLimit) != watchers+1 {
		return firstEventErr(s, nil)
	}
	return nil
}

// limitUsed reads the use GetStats reports of limit name.
func limitUsed(t *testing.T, e *env, name string) int64 {
	t.Helper()
	st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.GetLimits() {
		if l.GetName() == name {
			return l.GetUsed()
		}
	}
	t.Fatalf("GetStats has no %s", name)
	return 0
}

// uploadAs uploads n bytes as who, to the end.
func (r *limitRun) uploadAs(t *testing.T, who string, n int) error {
	_, err := r.w.e.uploadMsgs(callerCtx(t, who), chunked(&registryv1.UploadHeader{}, make([]byte, n), 16)...)
	return err
}

// stallUpload starts an upload of n bytes as who that sends its header and
// nothing more, and waits until the uploads in flight hold its bytes.
func (r *limitRun) stallUpload(t *testing.T, who string, n int64) {
	t.Helper()
	held := uploadsInFlight(t, r.w.e)
	ctx, cancel := context.WithCancel(callerCtx(t, who))
	t.Cleanup(cancel)
	s, err := r.w.e.rs.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(headerMsg(&registryv1.UploadHeader{Size: n})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for uploadsInFlight(t, r.w.e) != held+n {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled upload's %d bytes never counted as in flight", n)
		}
		time.Sleep(time.Millisecond) // polling GetStats, with a deadline
	}
}

func (r *limitRun) resolveAs(t *testing.T, who, h string) error {
	_, err := r.w.e.rs.Resolve(callerCtx(t, who), &registryv1.ResolveRequest{Handle: h})
	return err
}

// roomyLimits bound nothing a row does not bring to its edge: each row
// sets its own limit small.
func roomyLimits() Limits {
	l := testLimits
	l.MaxLinger = time.Minute
	l.MaxObjectBytes = 1 << 10
	return l
}

// TestEveryLimitAtAndOnePast: for each limit, global and per identity, a
// call that brings it exactly to full succeeds and the next, one past it,
// is RESOURCE_EXHAUSTED with the limit's reason, its metadata and a
// QuotaFailure (on "registryd"'s account for a global limit,
// "identity:NAME"'s for one identity's), RetryInfo for the rate; the
// refusal changes nothing anyone can observe, and the anonymous
// bystander's and carol's leases still hold their pins. A global limit
// refuses an identity as it refuses anonymous; one identity's limit does
// not hold back another identity, nor anonymous.
func TestEveryLimitAtAndOnePast(t *testing.T) {
	open := func(t *testing.T, r *limitRun, who string) error { return r.openAs(t, who) }
	watch := func(t *testing.T, r *limitRun, who string) error { return r.watchAs(t, who) }
	rows := []struct {
		name   string
		reason string
		limits func(*Limits)
		// quota is the QuotaFailure's value; md the ErrorInfo metadata
		// besides identity.
		quota int64
		md    map[string]string
		// perIdentity rows run as alice; global ones as anonymous and as
		// alice.
		perIdentity bool
		// setup brings who one call short of the limit; at is that call,
		// which fills it; past is the one more.
		setup    func(t *testing.T, r *limitRun, who string)
		at, past func(t *testing.T, r *limitRun, who string) error
	}{
		{
			name: "object size", reason: ReasonObjectTooLarge,
			limits: func(l *Limits) { l.MaxObjectBytes = 1024 },
			quota:  1024, md: map[string]string{"max": "1024", "want": "1025"},
			at:   func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 1024, "", false) },
			past: func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 1025, "", false) },
		},
		{
			// Resolve answers at most 100 bytes; the metadata's max is the
			// message's size, want the object's.
			name: "message size", reason: ReasonMessageTooLarge,
			limits: func(l *Limits) { l.MaxMessageBytes = messageOverhead + 100 },
			quota:  messageOverhead + 100, md: map[string]string{"max": fmt.Sprint(messageOverhead + 100), "want": "101"},
			setup: func(t *testing.T, r *limitRun, who string) {
				for _, n := range []int{100, 101} { // lingering, so no GC takes them first
					resp, err := r.w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: make([]byte, n), Linger: durationpb.New(time.Minute)})
					if err != nil {
						t.Fatal(err)
					}
					r.objs = append(r.objs, resp.GetHandle())
				}
			},
			at:   func(t *testing.T, r *limitRun, who string) error { return r.resolveAs(t, who, r.objs[0]) },
			past: func(t *testing.T, r *limitRun, who string) error { return r.resolveAs(t, who, r.objs[1]) },
		},
		{
			// 21 (the bystander's) + 13 (carol's) + 30 = 64.
			name: "pinned bytes", reason: ReasonPinnedBytesLimit,
			limits: func(l *Limits) { l.MaxPinnedBytes = 64 },
			quota:  64, md: map[string]string{"max": "64", "want": "65"},
			at: func(t *testing.T, r *limitRun, who string) error {
				return r.putAs(t, who, 30, r.lease(t, who).id, false)
			},
			past: func(t *testing.T, r *limitRun, who string) error {
				return r.putAs(t, who, 1, r.lease(t, who).id, false)
			},
		},
		{
			// Lingering bytes are held strongly too: 21 + 13 + 30 = 64.
			name: "lingering bytes", reason: ReasonPinnedBytesLimit,
			limits: func(l *Limits) { l.MaxPinnedBytes = 64 },
			quota:  64, md: map[string]string{"max": "64", "want": "65"},
			at:   func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 30, "", true) },
			past: func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 1, "", true) },
		},
		{
			name: "pins per lease", reason: ReasonLeasePinLimit,
			limits: func(l *Limits) { l.MaxPinsPerLease = 3 },
			quota:  3, md: map[string]string{"max": "3", "want": "4"},
			setup: func(t *testing.T, r *limitRun, who string) {
				for range 2 {
					if err := r.putAs(t, who, 1, r.lease(t, who).id, false); err != nil {
						t.Fatal(err)
					}
				}
			},
			at: func(t *testing.T, r *limitRun, who string) error {
				return r.putAs(t, who, 1, r.lease(t, who).id, false)
			},
			past: func(t *testing.T, r *limitRun, who string) error {
				return r.putAs(t, who, 1, r.lease(t, who).id, false)
			},
		},
		{
			// The bystander's, carol's, who's first and the one at.
			name: "leases", reason: ReasonLeaseLimit,
			limits: func(l *Limits) { l.MaxLeases = 4 },
			quota:  4, md: map[string]string{"max": "4", "want": "5"},
			setup: func(t *testing.T, r *limitRun, who string) {
				if err := r.openAs(t, who); err != nil {
					t.Fatal(err)
				}
			},
			at:   open,
			past: open,
		},
		{
			name: "watchers", reason: ReasonWatcherLimit,
			limits: func(l *Limits) { l.MaxWatchers = 2 },
			quota:  2, md: map[string]string{"max": "2", "want": "3"},
			setup: func(t *testing.T, r *limitRun, who string) {
				if err := r.watchAs(t, who); err != nil {
					t.Fatal(err)
				}
			},
			at:   watch,
			past: watch,
		},
		{
			name: "upload bytes", reason: ReasonUploadBytesLimit,
			limits: func(l *Limits) { l.MaxUploadBytes = 100 },
			quota:  100, md: map[string]string{"max": "100", "want": "101"},
			setup: func(t *testing.T, r *limitRun, who string) { r.stallUpload(t, who, 60) },
			at:    func(t *testing.T, r *limitRun, who string) error { return r.uploadAs(t, who, 40) },
			past:  func(t *testing.T, r *limitRun, who string) error { return r.uploadAs(t, who, 41) },
		},
		{
			name: "leases per identity", reason: ReasonIdentityLeaseLimit, perIdentity: true,
			limits: func(l *Limits) { l.MaxLeasesPerIdentity = 2 },
			quota:  2, md: map[string]string{"max": "2", "want": "3"},
			setup: func(t *testing.T, r *limitRun, who string) {
				if err := r.openAs(t, who); err != nil {
					t.Fatal(err)
				}
			},
			at:   open,
			past: open,
		},
		{
			// Pinned and lingering bytes both count: 20 pinned and 12
			// lingering are 32, and one lingering byte more is past.
			name: "pinned bytes per identity", reason: ReasonIdentityPinnedBytesLimit, perIdentity: true,
			limits: func(l *Limits) { l.MaxPinnedBytesPerIdentity = 32 },
			quota:  32, md: map[string]string{"max": "32", "want": "33"},
			setup: func(t *testing.T, r *limitRun, who string) {
				if err := r.putAs(t, who, 20, r.lease(t, who).id, false); err != nil {
					t.Fatal(err)
				}
			},
			at:   func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 12, "", true) },
			past: func(t *testing.T, r *limitRun, who string) error { return r.putAs(t, who, 1, "", true) },
		},
		{
			name: "upload bytes per identity", reason: ReasonIdentityUploadBytesLimit, perIdentity: true,
			limits: func(l *Limits) { l.IdentityMaxUploadBytes = 40 },
			quota:  40, md: map[string]string{"max": "40", "want": "41"},
			setup: func(t *testing.T, r *limitRun, who string) { r.stallUpload(t, who, 30) },
			at:    func(t *testing.T, r *limitRun, who string) error { return r.uploadAs(t, who, 10) },
			past:  func(t *testing.T, r *limitRun, who string) error { return r.uploadAs(t, who, 11) },
		},
		{
			// Carol's lease stream is hers, not alice's.
			name: "streams per identity", reason: ReasonIdentityStreamLimit, perIdentity: true,
			limits: func(l *Limits) { l.IdentityMaxStreams = 2 },
			quota:  2, md: map[string]string{"max": "2", "want": "3"},
			setup: func(t *testing.T, r *limitRun, who string) {
				if err := r.openAs(t, who); err != nil {
					t.Fatal(err)
				}
			},
			at:   open,
			past: open,
		},
		{
			// A burst of 4 and no refill within the test; carol spends 3
			// (her stream, her Put, one check).
			name: "request rate", reason: ReasonRateLimited, perIdentity: true,
			limits: func(l *Limits) { l.IdentityRate, l.IdentityBurst = 0.001, 4 },
			quota:  1, md: map[string]string{"rate": "0.001", "burst": "4"},
			setup: func(t *testing.T, r *limitRun, who string) {
				for range 3 {
					if err := r.resolveAs(t, who, r.w.weak); err != nil {
						t.Fatal(err)
					}
				}
			},
			at:   func(t *testing.T, r *limitRun, who string) error { return r.resolveAs(t, who, r.w.weak) },
			past: func(t *testing.T, r *limitRun, who string) error { return r.resolveAs(t, who, r.w.weak) },
		},
	}
	for _, row := range rows {
		callers := []string{"", "alice"} // "": anonymous
		if row.perIdentity {
			callers = []string{"alice"}
		}
		for _, who := range callers {
			name := row.name + "/anonymous"
			if who != "" {
				name = row.name + "/" + who
			}
			t.Run(name, func(t *testing.T) {
				l := roomyLimits()
				row.limits(&l)
				r := newLimitRun(t, &l)
				if row.setup != nil {
					row.setup(t, r, who)
				}
				if err := row.at(t, r, who); err != nil {
					t.Fatalf("at the limit: %v", err)
				}
				before := r.w.snapshot(t)
				err := row.past(t, r, who)
				identity := ""
				if row.perIdentity {
					identity = who
				}
				wantLimitDetails(t, err, row.reason, identity, row.quota, row.md)
				if after := r.w.snapshot(t); after != before {
					t.Errorf("the refusal changed the registry:\nbefore %s\nafter  %s", before, after)
				}
				r.w.checkBystander(t)
				r.checkCarol(t)
				if row.perIdentity {
					for _, other := range []string{"bob", ""} {
						if err := row.past(t, r, other); err != nil {
							t.Errorf("%q, while alice is at her limit: %v", other, err)
						}
					}
				}
			})
		}
	}
}

// wantLimitDetails fails unless err is RESOURCE_EXHAUSTED reason, its
// ErrorInfo (domain "registry") has metadata md and, for a limit per
// identity, identity; its QuotaFailure is reason's of value quota on
// identity's account ("registryd"'s for ""); and it carries a RetryInfo
// if and only if it is RATE_LIMITED.
func wantLimitDetails(t *testing.T, err error, reason, identity string, quota int64, md map[string]string) {
	t.Helper()
	wantStatus(t, err, codes.ResourceExhausted, reason)
	var (
		info  *errdetails.ErrorInfo
		qf    *errdetails.QuotaFailure
		retry *errdetails.RetryInfo
	)
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.QuotaFailure:
			qf = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if info.GetDomain() != "registry" {
		t.Errorf("ErrorInfo domain %q, want registry", info.GetDomain())
	}
	want := map[string]string{}
	for k, v := range md {
		want[k] = v
	}
	if identity != "" {
		want["identity"] = identity
	}
	if got := info.GetMetadata(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ErrorInfo metadata %v, want %v", got, want)
	}
	subject := "registryd"
	if identity != "" {
		subject = "identity:" + identity
	}
	if v := qf.GetViolations(); len(v) != 1 || v[0].GetSubject() != subject || v[0].GetQuotaId() != reason || v[0].GetQuotaValue() != quota {
		t.Errorf("QuotaFailure %v, want one violation: subject %s, quota_id %s, quota_value %d", qf, subject, reason, quota)
	}
	if reason != ReasonRateLimited {
		if retry != nil {
			t.Errorf("RetryInfo %v on a limit that no wait lifts", retry)
		}
		return
	}
	// One token at 0.001/s comes in 1000s.
	if d := retry.GetRetryDelay().AsDuration(); d < 900*time.Second || d > 1000*time.Second {
		t.Errorf("RetryInfo delay %v, want about 1000s", d)
	}
}
