package e2e

import (
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// alterMAC returns s, a handle or lease id, with its last character
// changed. The 52 characters after the prefix encode its 39 bytes
// exactly, so the last one holds MAC bits only: the result is well formed
// but was never issued.
func alterMAC(s string) string {
	last := s[len(s)-1]
	repl := byte('A')
	if last == 'A' {
		repl = 'B'
	}
	return s[:len(s)-1] + string(repl)
}

// wantRestartedMetadata checks the ErrorInfo metadata of a
// REGISTRY_RESTARTED answer: the epoch the handle or lease id was issued
// in, this run's, and when this run began.
func wantRestartedMetadata(t *testing.T, md map[string]string, issued, current uint64) {
	t.Helper()
	he, herr := strconv.ParseUint(md["handle_epoch"], 10, 64)
	ce, cerr := strconv.ParseUint(md["current_epoch"], 10, 64)
	start, serr := time.Parse(time.RFC3339Nano, md["epoch_start_time"])
	if herr != nil || cerr != nil || serr != nil {
		t.Fatalf("REGISTRY_RESTARTED metadata = %v, want numeric handle_epoch and current_epoch, and an RFC 3339 epoch_start_time", md)
	}
	if he != issued || ce != current {
		t.Errorf("metadata handle_epoch %d, current_epoch %d; want %d (first run), %d (this run)", he, ce, issued, current)
	}
	if !start.Equal(time.UnixMilli(int64(current))) {
		t.Errorf("metadata epoch_start_time %v, want this run's start %v", start, time.UnixMilli(int64(current)).UTC())
	}
}

// TestClientLeaseReportsRestartOnce: registryd, with a key file, on a
// fixed port, stops and a new run takes the same port with the same key,
// under a Go client's lease with a 30s grace.
//
// When registryd dies without a word (SIGKILL), the lease reconnects
// once, learns from the new run that the lease went with the old one, and
// ends at once with ErrRestarted, carrying the epochs: reported once
// (OnEnd called once), never resumed, and not tried again: the new run
// sees one Lease stream, refused, and no lease. When registryd stops
// gracefully (SIGTERM), the lease ends as revoked at shutdown and the new
// run sees no Lease stream at all.
//
// Either way the first run's handle and lease id answer
// REGISTRY_RESTARTED with the epochs; a handle never issued answers
// HANDLE_UNKNOWN, even one claiming the first run's epoch; and the client
// works with the new run.
func TestClientLeaseReportsRestartOnce(t *testing.T) {
	t.Parallel()
	t.Run("crash", func(t *testing.T) {
		t.Parallel()
		restartUnderLease(t, syscall.SIGKILL)
	})
	t.Run("graceful stop", func(t *testing.T) {
		t.Parallel()
		restartUnderLease(t, syscall.SIGTERM)
	})
}

func restartUnderLease(t *testing.T, stop syscall.Signal) {
	key := writeKeyFile(t)
	addr := closedPort(t)
	first := startDaemon(t, "--addr", addr, "--key-file", key)
	if first.Addr != addr {
		t.Fatalf("registryd serves on %s, want %s", first.Addr, addr)
	}
	firstEpoch := epochOf(t, dial(t, addr))

	c := dialClient(t, addr)
	ctx := testCtx(t)
	var onEnds atomic.Int32
	ended := make(chan error, 4)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-restart-once"), regclient.Grace(30*time.Second),
		regclient.OnEnd(func(err error) {
			onEnds.Add(1)
			ended <- err
		}))
	if got := l.GraceGranted(); got != 30*time.Second {
		t.Fatalf("grace granted = %v, want 30s", got)
	}
	info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	h := info.Handle

	if err := first.cmd.Process.Signal(stop); err != nil {
		t.Fatal(err)
	}
	if code := first.waitExit(t, stopTimeout); stop == syscall.SIGTERM && code != 0 {
		t.Fatalf("registryd exited %d on SIGTERM, want 0", code)
	}
	second := startDaemon(t, "--addr", addr, "--key-file", key, "--metrics-addr", "127.0.0.1:0")
	m := metricsAddr.FindStringSubmatch(second.Stderr())
	if m == nil {
		t.Fatalf("no metrics address in registryd's log:\n%s", second.Stderr())
	}
	metricsURL := "http://" + m[1] + "/metrics"
	admin := dial(t, addr)
	secondEpoch := epochOf(t, admin)
	if secondEpoch == firstEpoch {
		t.Fatalf("both runs have epoch %d", firstEpoch)
	}

	// The lease ends well within its grace: with the restart, or the
	// shutdown.
	waitDone(t, l, waitTimeout)
	err = l.Err()
	var le *regclient.LeaseError
	if !errors.As(err, &le) || le.LeaseID != l.ID() {
		t.Fatalf("Err = %v, want a *LeaseError for lease %s", err, l.ID())
	}
	want, leaseStreams := regclient.ErrRestarted, 1
	if stop == syscall.SIGTERM {
		want, leaseStreams = regclient.ErrLeaseRevoked, 0
		if le.Cause != regclient.CauseShutdown || le.Released != 1 {
			t.Errorf("LeaseError = %+v, want revoked at shutdown, 1 pin released", le)
		}
	} else {
		var ce *regclient.Error
		if !errors.As(err, &ce) || ce.Code != codes.NotFound || ce.Reason != "REGISTRY_RESTARTED" {
			t.Fatalf("Err = %v, want it to carry the server's NOT_FOUND REGISTRY_RESTARTED", err)
		}
		wantRestartedMetadata(t, ce.Metadata, firstEpoch, secondEpoch)
	}
	for _, kind := range []error{regclient.ErrRestarted, regclient.ErrLeaseLost, regclient.ErrLeaseRevoked} {
		if errors.Is(err, kind) != errors.Is(kind, want) {
			t.Errorf("Err = %v: errors.Is(%v) = %v, want only %v", err, kind, errors.Is(err, kind), want)
		}
	}
	select {
	case got := <-ended:
		if !errors.Is(got, want) {
			t.Errorf("OnEnd got %v, want %v", got, want)
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnEnd not called")
	}

	// Nothing more happens: no other report, no resume, and the client
	// tries no more Lease streams on the new run.
	wantQuiet := func(t *testing.T) {
		t.Helper()
		fams := scrape(t, metricsURL)
		lease := `grpc_service="registry.v1.RegistryService",grpc_method="Lease"`
		wantValues(t, fams, map[string]float64{
			"grpc_server_started_total{" + lease + "}":                      float64(leaseStreams),
			"grpc_server_handled_total{" + lease + `,grpc_code="NotFound"}`: float64(leaseStreams),
		})
		if resp, err := admin.admin.ListLeases(rpcCtx(t), &registryv1.ListLeasesRequest{}); err != nil || len(resp.GetLeases()) != 0 {
			t.Fatalf("ListLeases = %v, %v; want none", resp.GetLeases(), err)
		}
		st, err := admin.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
		if err != nil {
			t.Fatalf("GetStats: %v", err)
		}
		if st.GetLeasesAttached() != 0 || st.GetLeasesDetached() != 0 || st.GetPins() != 0 {
			t.Fatalf("stats: %d leases attached, %d detached, %d pins; want none", st.GetLeasesAttached(), st.GetLeasesDetached(), st.GetPins())
		}
	}
	// Watched for as long as several of the client's resume backoffs
	// (50ms, growing by 1.6) would take.
	const quiet = time.Second
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(quiet); ; <-tick.C {
		wantQuiet(t)
		if t.Failed() {
			t.FailNow()
		}
		if time.Now().After(deadline) {
			break
		}
	}
	if n := onEnds.Load(); n != 1 {
		t.Errorf("OnEnd called %d times, want once", n)
	}
	if n := l.Resumes(); n != 0 {
		t.Errorf("Resumes = %d, want 0", n)
	}
	if _, err := l.Pin(ctx, h); !errors.Is(err, want) {
		t.Errorf("Pin on the ended lease = %v, want %v", err, want)
	}
	if _, err := l.Close(ctx); !errors.Is(err, want) {
		t.Errorf("Close of the ended lease = %v, want %v", err, want)
	}

	// The first run's handle and lease id, through the client and raw.
	_, _, err = c.Resolve(ctx, h)
	wantClientErr(t, err, regclient.ErrRestarted, codes.NotFound, "REGISTRY_RESTARTED")
	var ce *regclient.Error
	if errors.As(err, &ce) {
		wantRestartedMetadata(t, ce.Metadata, firstEpoch, secondEpoch)
	}
	_, err = admin.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
	wantRestartedMetadata(t, wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED").GetMetadata(), firstEpoch, secondEpoch)
	_, err = tryOpenLease(t, admin, &registryv1.OpenLease{ClientName: "e2e-restart-once", ResumeLeaseId: l.ID()})
	wantRestartedMetadata(t, wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED").GetMetadata(), firstEpoch, secondEpoch)
	wantErrLine(t, ctl(t, addr, "get", h), ctlNotFound, "registryctl: "+h+": ", "(REGISTRY_RESTARTED)")

	// Never issued: altered from a genuine one of either run.
	wantGone(t, admin, alterMAC(h), codes.NotFound, "HANDLE_UNKNOWN")
	_, err = tryOpenLease(t, admin, &registryv1.OpenLease{ClientName: "e2e-restart-once", ResumeLeaseId: alterMAC(l.ID())})
	wantStatus(t, err, codes.NotFound, "LEASE_NOT_FOUND")
	fresh, err := c.Put(ctx, randomBytes(64), regclient.Linger(time.Minute))
	if err != nil {
		t.Fatalf("Put on the new run: %v", err)
	}
	wantGone(t, admin, alterMAC(fresh.Handle), codes.NotFound, "HANDLE_UNKNOWN")

	// The client itself is fine: a new lease on the new run works.
	l2 := openClientLease(t, ctx, c, regclient.LeaseName("e2e-after-restart"))
	if rs, err := l2.Pin(ctx, fresh.Handle); err != nil || rs[0].Outcome != regclient.OutcomePinned {
		t.Fatalf("Pin on a new lease after the restart = %+v, %v", rs, err)
	}
}
