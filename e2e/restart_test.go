package e2e

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// writeKeyFile writes a fresh random key, as 64 hex characters, to a file
// in a temporary directory and returns its path.
func writeKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registryd.key")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(randomBytes(32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func epochOf(t *testing.T, c *client) uint64 {
	t.Helper()
	st, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats: %v", err)
	}
	return st.GetEpoch()
}

// TestRestartIsReportedAsRestart: with the same key, a new run of
// registryd recognises the handles and lease ids of the previous run and
// says they died with it (REGISTRY_RESTARTED), never "collected" or
// "unknown"; a handle minted with another key is unknown.
func TestRestartIsReportedAsRestart(t *testing.T) {
	key := writeKeyFile(t)

	first := startDaemon(t, "--key-file", key)
	c1 := dial(t, first.Addr)
	firstEpoch := epochOf(t, c1)
	l := openLease(t, c1, &registryv1.OpenLease{ClientName: "e2e-restart"})
	h := put(t, c1, randomBytes(1024), l.ID())
	if code := first.stop(t); code != 0 {
		t.Fatalf("first registryd exited %d on SIGTERM, want 0", code)
	}

	second := startDaemon(t, "--key-file", key)
	c2 := dial(t, second.Addr)
	secondEpoch := epochOf(t, c2)
	if secondEpoch == firstEpoch {
		t.Fatalf("both runs have epoch %d", firstEpoch)
	}

	t.Run("object handle", func(t *testing.T) {
		_, err := c2.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
		info := wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED")
		md := info.GetMetadata()
		he, herr := strconv.ParseUint(md["handle_epoch"], 10, 64)
		ce, cerr := strconv.ParseUint(md["current_epoch"], 10, 64)
		if herr != nil || cerr != nil {
			t.Fatalf("ErrorInfo metadata = %v, want numeric handle_epoch and current_epoch", md)
		}
		if he == ce {
			t.Errorf("handle_epoch and current_epoch are both %d", he)
		}
		if he != firstEpoch || ce != secondEpoch {
			t.Errorf("handle_epoch %d, current_epoch %d; want %d (first run), %d (this run)", he, ce, firstEpoch, secondEpoch)
		}
		_, err = c2.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: h})
		wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED")
	})

	t.Run("handle from another key", func(t *testing.T) {
		other := dial(t, startDaemon(t, "--key-file", writeKeyFile(t)).Addr)
		foreign := put(t, other, randomBytes(64), "")
		wantGone(t, c2, foreign, codes.NotFound, "HANDLE_UNKNOWN")
	})

	t.Run("resume the old lease", func(t *testing.T) {
		_, err := tryOpenLease(t, c2, &registryv1.OpenLease{ClientName: "e2e-restart", ResumeLeaseId: l.ID()})
		wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED")
	})
}

// TestGracefulShutdown: on SIGTERM, registryd tells lease holders it is
// shutting down, ends watch streams, and exits 0 promptly, saying so in its
// log.
func TestGracefulShutdown(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.Addr)
	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-shutdown"})
	h := put(t, c, randomBytes(1024), l.ID())
	w := openWatch(t, c, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The watch stream ends, after the events of the lease's release.
	var end error
	for i := 0; end == nil; i++ {
		if i == 16 {
			t.Fatal("watch stream still sending events after 16")
		}
		_, end = w.in.next(t, waitTimeout)
	}
	wantStatus(t, end, codes.Unavailable, "SHUTTING_DOWN")

	msg := l.in.mustNext(t)
	if rv := msg.GetRevoked(); rv == nil || rv.GetCause() != registryv1.RevokeCause_REVOKE_CAUSE_SHUTDOWN || rv.GetReleased() != 1 {
		t.Fatalf("lease stream got %v, want revoked, cause SHUTDOWN, released 1", msg)
	}
	l.wantEOF(t)

	if code := d.waitExit(t, 5*time.Second); code != 0 {
		t.Errorf("registryd exited %d on SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM to exit: %v", time.Since(start))
	log := d.Stderr()
	if !strings.Contains(log, `msg="shutting down"`) || !strings.Contains(log, "msg=stopped") {
		t.Errorf("registryd log does not say it shut down and stopped:\n%s", log)
	}
	if strings.Contains(log, "calls still in flight were cut") {
		t.Errorf("registryd cut calls instead of ending them gracefully:\n%s", log)
	}
}
