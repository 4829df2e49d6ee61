package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/testlog"
)

// Environment of the lease-holder process (TestHelperLeaseHolder).
const (
	holderAddrEnv    = "REGISTRY_E2E_ADDR"
	holderPayloadEnv = "REGISTRY_E2E_PAYLOAD" // hex
	holderLinePrefix = "HOLDER "
	holderClientName = "e2e-holder"
)

// TestLifecycleEndToEnd follows one object through its whole life, as the
// design draws it: Put pinned by a lease, resolvable and safe from the
// collector while pinned, then, once the lease ends, unpinned, weak and
// collected by the Go garbage collector, with a watcher told each step.
// The lease ends cleanly (close), because the process holding it dies
// (SIGKILL: the server sees the TCP connection close), or because it stops
// answering (SIGSTOP: the server's keepalive pings go unanswered).
func TestLifecycleEndToEnd(t *testing.T) {
	tests := []struct {
		name       string
		daemonArgs []string
		// hold pins data with a new lease and returns the object's handle,
		// the lease id, and a func that ends the lease.
		hold func(t *testing.T, c *client, data []byte) (h, leaseID string, end func())
	}{
		{
			name: "client closes the lease",
			hold: func(t *testing.T, c *client, data []byte) (string, string, func()) {
				l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-lifecycle"})
				h := put(t, c, data, l.ID())
				return h, l.ID(), func() { l.close(t, 1) }
			},
		},
		{
			name: "holder process is killed",
			hold: func(t *testing.T, c *client, data []byte) (string, string, func()) {
				hp := startHolder(t, c.conn.Target(), data)
				if got := findLease(t, c, hp.leaseID); got == nil || !got.GetAttached() ||
					got.GetClientName() != holderClientName || got.GetPinCount() != 1 {
					t.Fatalf("holder's lease as listed = %v, want attached, client %q, pin_count 1", got, holderClientName)
				}
				return hp.handle, hp.leaseID, func() { hp.kill(t) }
			},
		},
		{
			// A frozen process keeps its TCP connection open but answers
			// no HTTP/2 ping: only the server's keepalive can tell, as it
			// would for a host that vanished from the network.
			name:       "holder process freezes",
			daemonArgs: []string{"--keepalive-time=1s", "--keepalive-timeout=1s"},
			hold: func(t *testing.T, c *client, data []byte) (string, string, func()) {
				hp := startHolder(t, c.conn.Target(), data)
				return hp.handle, hp.leaseID, func() {
					if err := hp.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
						t.Fatalf("stop holder: %v", err)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, tt.daemonArgs...)
			c := dial(t, d.Addr)
			data := make([]byte, 4096)
			rand.Read(data)

			h, leaseID, end := tt.hold(t, c, data)
			wantResolves(t, c, h, data)
			w := openWatch(t, c, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

			// Pinned: a forced collection must not take it.
			if rep := collect(t, c); rep.GetCollectedObjects() != 0 {
				t.Fatalf("Collect while pinned freed %d objects, want 0", rep.GetCollectedObjects())
			}
			wantResolves(t, c, h, data)
			wantStat(t, c, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

			end()
			waitLease(t, c, leaseID, waitTimeout, "the lease to be gone from ListLeases",
				func(l *registryv1.LeaseInfo) bool { return l == nil })

			collect(t, c)
			wantGone(t, c, h, codes.NotFound, "OBJECT_COLLECTED")
			// Count from the cumulative figure: a GC cycle of the runtime's own
			// choosing may have taken the object before the forced one.
			st, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
			if err != nil {
				t.Fatalf("GetStats: %v", err)
			}
			if st.GetCollectedObjects() != 1 || st.GetCollectedBytes() != int64(len(data)) {
				t.Errorf("stats: collected %d objects, %d bytes; want 1, %d", st.GetCollectedObjects(), st.GetCollectedBytes(), len(data))
			}

			// The watcher saw every step, in order, then its stream ended by
			// itself: its only handle is gone.
			var seq uint64
			for i, want := range []struct {
				kind  registryv1.EventKind
				state registryv1.ObjectState
				lease string
			}{
				// Each event tells the state after it: the last pin's
				// release leaves the object WEAK at once.
				{registryv1.EventKind_EVENT_KIND_UNPINNED, registryv1.ObjectState_OBJECT_STATE_WEAK, leaseID},
				{registryv1.EventKind_EVENT_KIND_WEAK, registryv1.ObjectState_OBJECT_STATE_WEAK, ""},
				{registryv1.EventKind_EVENT_KIND_COLLECTED, registryv1.ObjectState_OBJECT_STATE_COLLECTED, ""},
			} {
				ev := w.next(t)
				if ev.GetKind() != want.kind || ev.GetHandle() != h || ev.GetPinCount() != 0 {
					t.Fatalf("watch event %d = %v, want %v for %s with pin_count 0", i+1, ev, want.kind, h)
				}
				if ev.GetState() != want.state {
					t.Errorf("watch event %v has state %v, want %v", ev.GetKind(), ev.GetState(), want.state)
				}
				if ev.GetLeaseId() != want.lease {
					t.Errorf("watch event %v has lease_id %q, want %q", ev.GetKind(), ev.GetLeaseId(), want.lease)
				}
				if ev.GetSequence() <= seq {
					t.Errorf("watch event %v has sequence %d, not above the previous %d", ev.GetKind(), ev.GetSequence(), seq)
				}
				seq = ev.GetSequence()
			}
			if ev, err := w.in.next(t, waitTimeout); !errors.Is(err, io.EOF) {
				t.Fatalf("after COLLECTED the watch stream gave %v, %v; want its clean end (io.EOF)", ev, err)
			}
		})
	}
}

// holderProcess is a separate OS process holding a lease: the test binary
// re-executed to run TestHelperLeaseHolder.
type holderProcess struct {
	cmd     *exec.Cmd
	handle  string
	leaseID string
	exited  chan struct{}
}

// startHolder starts a holder process that pins data on the registryd at
// addr, and waits for it to say what it holds.
func startHolder(t *testing.T, addr string, data []byte) *holderProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperLeaseHolder$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), holderEnv+"=1", holderAddrEnv+"="+addr, holderPayloadEnv+"="+hex.EncodeToString(data))
	stdin, err := cmd.StdinPipe() // held open: the holder ends if the test dies
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testlog.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start holder: %v", err)
	}
	hp := &holderProcess{cmd: cmd, exited: make(chan struct{})}
	lines := make(chan string, 16)
	var out testlog.Buffer
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			select {
			case lines <- sc.Text():
			default: // only the first HOLDER line matters
			}
		}
		cmd.Wait()
		close(hp.exited)
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-hp.exited
	})

	timeout := time.After(waitTimeout)
	for range 100 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("holder exited before holding anything\nstdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
			}
			if rest, found := strings.CutPrefix(line, holderLinePrefix); found {
				if _, err := fmt.Sscanf(rest, "handle=%s lease=%s", &hp.handle, &hp.leaseID); err != nil {
					t.Fatalf("holder line %q: %v", line, err)
				}
				return hp
			}
		case <-timeout:
			t.Fatalf("holder said nothing within %v\nstdout:\n%s\nstderr:\n%s", waitTimeout, out.String(), stderr.String())
		}
	}
	t.Fatalf("holder printed too much without holding anything:\n%s", out.String())
	return nil
}

// kill ends the holder with SIGKILL: no goodbye to the server, only its TCP
// connection closing.
func (hp *holderProcess) kill(t *testing.T) {
	t.Helper()
	if err := hp.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill holder: %v", err)
	}
	select {
	case <-hp.exited:
	case <-time.After(waitTimeout):
		t.Fatal("holder did not die of SIGKILL")
	}
}

// TestHelperLeaseHolder is not a test: it is the body of the lease-holding
// client process that TestLifecycleEndToEnd starts and kills. It does
// nothing unless REGISTRY_E2E_HOLDER=1. Then it opens a lease on the
// registryd at REGISTRY_E2E_ADDR, puts REGISTRY_E2E_PAYLOAD pinned by it,
// prints "HOLDER handle=H lease=L" and blocks until killed (or until its
// stdin closes, should the test die first).
func TestHelperLeaseHolder(t *testing.T) {
	if os.Getenv(holderEnv) != "1" {
		return
	}
	data, err := hex.DecodeString(os.Getenv(holderPayloadEnv))
	if err != nil || len(data) == 0 {
		t.Fatalf("%s: want a hex payload", holderPayloadEnv)
	}
	c := dial(t, os.Getenv(holderAddrEnv))
	l := openLease(t, c, &registryv1.OpenLease{ClientName: holderClientName})
	h := put(t, c, data, l.ID())
	fmt.Printf("%shandle=%s lease=%s\n", holderLinePrefix, h, l.ID())
	io.Copy(io.Discard, os.Stdin)
}
