package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Peak RSS budgets for moving a 1 GiB object, from the issue: registryd
// holds the object itself and little more; the client streams it.
const (
	transferSize     = 1 << 30
	serverRSSBudget  = 1300 << 20
	clientRSSBudget  = 64 << 20
	transferDeadline = 3 * time.Minute
)

var transferLine = regexp.MustCompile(`transfer size=(\d+) upload_MB/s=(\d+) download_MB/s=(\d+) sha256_match=true client_peak_rss_bytes=(\d+)`)

// TestLargeObjectTransferInBoundedMemory uploads and downloads a 1 GiB
// object between the real registrybench client and the real registryd,
// and checks the bytes and the peak RSS of both processes.
func TestLargeObjectTransferInBoundedMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("peak RSS is read from Linux's /proc")
	}
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), transferDeadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, registrybenchBin, "-mode", "transfer", "-addr", d.Addr, "-size", strconv.Itoa(transferSize)).CombinedOutput()
	if err != nil {
		t.Fatalf("registrybench transfer: %v\n%s", err, out)
	}
	m := transferLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("registrybench printed no transfer line with matching bytes:\n%s", out)
	}
	clientRSS, _ := strconv.ParseInt(string(m[4]), 10, 64)
	serverRSS := peakRSS(t, d.cmd.Process.Pid)
	t.Logf("1 GiB: upload %s MB/s, download %s MB/s; peak RSS registryd %d MiB, client %d MiB",
		m[2], m[3], serverRSS>>20, clientRSS>>20)
	if serverRSS >= serverRSSBudget {
		t.Errorf("registryd peak RSS %d MiB, want under %d MiB", serverRSS>>20, serverRSSBudget>>20)
	}
	if clientRSS >= clientRSSBudget {
		t.Errorf("client peak RSS %d MiB, want under %d MiB", clientRSS>>20, clientRSSBudget>>20)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// failingReader gives n bytes, then fails: an upload source that breaks.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// TestCutOffUploadLeavesNothingBehind: an upload whose source breaks, or
// whose caller gives up, stores nothing; the registry's figures do not
// move.
func TestCutOffUploadLeavesNothingBehind(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.Addr)
	before, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := regclient.Dial(d.Addr, regclient.WithoutTracing())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	if _, err := rc.Upload(rpcCtx(t), &failingReader{n: 8 << 20}, 64<<20); err == nil {
		t.Fatal("upload from a broken source succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	go func() {
		w.Write(make([]byte, 4<<20))
		cancel() // the caller gives up mid-way
		w.Write(make([]byte, 1<<20))
		w.Close()
	}()
	if _, err := rc.Upload(ctx, r, 64<<20); err == nil {
		t.Fatal("cancelled upload succeeded")
	}

	after, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type figures struct{ puts, pinned, lingering, weak, bytes int64 }
	of := func(st *registryv1.GetStatsResponse) figures {
		o, b := st.GetObjects(), st.GetBytes()
		return figures{st.GetPuts(), o.GetPinned(), o.GetLingering(), o.GetWeak(), b.GetPinned() + b.GetLingering() + b.GetWeak()}
	}
	if of(after) != of(before) {
		t.Fatalf("stats moved after cut-off uploads: before %+v, after %+v", of(before), of(after))
	}
}
