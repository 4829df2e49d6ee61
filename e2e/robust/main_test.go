package robust

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weakref/registry/internal/testbin"
)

var (
	flagDuration = flag.Duration("robust.duration", 15*time.Second, "how long the faulted run lasts, registryd serving (8s with -short)")
	flagStreams  = flag.Int("robust.streams", 200, "lease streams TestKilledLeaseStreamsLeaveNoPins kills")
	flagWorkers  = flag.Int("robust.workers", 3, "mixed workers in a faulted run")
	flagLoose    = flag.Int("robust.loose", 5000, "unpinned objects put before each final forced collection")
	flagVis      = flag.String("robust.vis", "", "directory for visualisations and histories of failed checks (default: t.TempDir())")
	flagSoak     = flag.Duration("soak", 0, "run TestSoak this long (0: skip it)")
	flagSoakEach = flag.Duration("soak.every", 30*time.Second, "how often the soak prints its figures")
)

// The binaries TestMain builds.
var (
	registrydBin      string // the release build
	registrydFaultBin string // built with -tags registry_fault
	workerBin         string
)

// Timeouts, generous for a loaded 2-core machine; every wait ends as soon
// as its condition holds.
const (
	startTimeout = 20 * time.Second
	rpcTimeout   = 10 * time.Second
	pollInterval = 50 * time.Millisecond
)

// registryd's keepalive in these tests: a dead peer is dropped within
// keepaliveTime + keepaliveTimeout of its last sign of life.
const (
	keepaliveTime    = time.Second
	keepaliveTimeout = time.Second
	shutdownTimeout  = 8 * time.Second
)

// testKey is the handle MAC key of every registryd run, so that a restart
// recognises its predecessor's handles (REGISTRY_RESTARTED).
const testKey = "5f1c9a7e2b4d6f8091a3c5e7f9b1d3f5a7c9e1b3d5f7091a2c4e6f8a0b2d4f6e"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := testbin.Build("registry-robust-", 4*time.Minute,
		testbin.Binary{Path: &registrydBin, Name: "registryd", Args: []string{"./cmd/registryd"}},
		testbin.Binary{Path: &registrydFaultBin, Name: "registryd-fault", Args: []string{"-tags", "registry_fault", "./cmd/registryd"}},
		testbin.Binary{Path: &workerBin, Name: "worker", Args: []string{"./e2e/robust/worker"}},
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "robust:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	return m.Run()
}

// daemon is one registryd process.
type daemon struct {
	Addr        string // gRPC
	MetricsAddr string // HTTP /metrics

	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder // guarded by mu
	exited chan struct{}   // closed once the process was reaped
}

var (
	servingAddr = regexp.MustCompile(`msg="registryd serving" addr=(127\.0\.0\.1:[0-9]+)`)
	metricsAddr = regexp.MustCompile(`msg="metrics serving" addr=(127\.0\.0\.1:[0-9]+)`)
)

// startDaemon starts bin on free loopback ports with args and env added to
// a clean environment, and waits until it serves gRPC and metrics.
func startDaemon(t testing.TB, bin string, env []string, args ...string) *daemon {
	t.Helper()
	args = append([]string{"--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
		"--keepalive-time", keepaliveTime.String(), "--keepalive-timeout", keepaliveTimeout.String(),
		"--shutdown-timeout", shutdownTimeout.String(), "--max-linger", "0"}, args...)
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRYD_") && !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "REGISTRY_FAULT") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "REGISTRYD_KEY="+testKey)
	cmd.Env = append(cmd.Env, env...)
	d := &daemon{cmd: cmd, exited: make(chan struct{})}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registryd: %v", err)
	}
	grpcAddr, httpAddr := make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			if d.stderr.Len() < 1<<20 { // bounded: a soak logs for minutes
				d.stderr.WriteString(line + "\n")
			}
			d.mu.Unlock()
			if m := servingAddr.FindStringSubmatch(line); m != nil {
				grpcAddr <- m[1]
			}
			if m := metricsAddr.FindStringSubmatch(line); m != nil {
				httpAddr <- m[1]
			}
		}
		io.Copy(io.Discard, pipe)
		cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("registryd stderr (tail):\n%s", tail(d.Stderr(), 40))
		}
	})
	deadline := time.After(startTimeout)
	for d.Addr == "" || d.MetricsAddr == "" {
		select {
		case d.Addr = <-grpcAddr:
		case d.MetricsAddr = <-httpAddr:
		case <-d.exited:
			t.Fatalf("registryd exited before serving\nstderr:\n%s", d.Stderr())
		case <-deadline:
			t.Fatalf("registryd did not serve within %v\nstderr:\n%s", startTimeout, d.Stderr())
		}
	}
	return d
}

// Stderr returns what registryd wrote to stderr so far.
func (d *daemon) Stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// terminate sends SIGTERM and waits for the exit, killing after timeout.
// It returns how long the exit took, and whether it came by itself.
func (d *daemon) terminate(timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return time.Since(start), true
	case <-time.After(timeout):
		d.kill()
		return time.Since(start), false
	}
}

func (d *daemon) kill() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Kill()
		<-d.exited
	}
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// poll calls cond every pollInterval until it returns true or timeout
// passes; it reports whether cond held. The number of calls is bounded.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for i, n := 0, int(timeout/pollInterval)+1; i <= n; i++ {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(pollInterval)
	}
	return false
}
