package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// grpcurlPath finds the grpcurl binary on PATH, in $(go env GOBIN) or in
// $(go env GOPATH)/bin. Without it the test is skipped, or fails when
// CI=true.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var dirs []string
		if gobin := strings.TrimSpace(lines[0]); gobin != "" {
			dirs = append(dirs, gobin)
		}
		if len(lines) > 1 {
			for _, gp := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
		for _, dir := range dirs {
			p := filepath.Join(dir, "grpcurl")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	const msg = "grpcurl not found on PATH nor in $(go env GOPATH)/bin; install it with: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// grpcurl runs the grpcurl binary with args and returns its stdout,
// failing the test if it fails.
func grpcurl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("grpcurl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestGrpcurlReflection: registryd serves reflection and health, so that
// grpcurl works against it with no proto files.
func TestGrpcurlReflection(t *testing.T) {
	bin := grpcurlPath(t)
	d := startDaemon(t)

	t.Run("list", func(t *testing.T) {
		out := grpcurl(t, bin, "-plaintext", d.Addr, "list")
		services := strings.Fields(out)
		for _, want := range []string{"registry.v1.RegistryService", "registry.v1.AdminService", "grpc.health.v1.Health"} {
			found := false
			for _, s := range services {
				found = found || s == want
			}
			if !found {
				t.Errorf("grpcurl list does not list %s:\n%s", want, out)
			}
		}
	})

	t.Run("put and resolve", func(t *testing.T) {
		type putResponse struct {
			Handle string `json:"handle"`
			Info   struct {
				State    string `json:"state"`
				PinCount int    `json:"pinCount"`
			} `json:"info"`
		}
		var put putResponse
		out := grpcurl(t, bin, "-plaintext", "-d", `{"data":"aGVsbG8="}`, d.Addr, "registry.v1.RegistryService/Put")
		if err := json.Unmarshal([]byte(out), &put); err != nil || !strings.HasPrefix(put.Handle, "obj_") {
			t.Fatalf("Put printed %q (%v), want JSON with an obj_ handle", out, err)
		}
		if put.Info.State != "OBJECT_STATE_WEAK" {
			t.Errorf("Put without a lease: state %q, want OBJECT_STATE_WEAK", put.Info.State)
		}

		// A weak object may be collected at any GC cycle of the server's
		// choosing, so the object to resolve is pinned by a lease held here.
		l := openLease(t, dial(t, d.Addr), &registryv1.OpenLease{ClientName: "e2e-grpcurl"})
		out = grpcurl(t, bin, "-plaintext", "-d", `{"data":"aGVsbG8=","lease_id":"`+l.ID()+`"}`, d.Addr, "registry.v1.RegistryService/Put")
		put = putResponse{}
		if err := json.Unmarshal([]byte(out), &put); err != nil || !strings.HasPrefix(put.Handle, "obj_") {
			t.Fatalf("Put printed %q (%v), want JSON with an obj_ handle", out, err)
		}
		if put.Info.State != "OBJECT_STATE_PINNED" || put.Info.PinCount != 1 {
			t.Errorf("Put with a lease: state %q pin_count %d, want OBJECT_STATE_PINNED 1", put.Info.State, put.Info.PinCount)
		}

		out = grpcurl(t, bin, "-plaintext", "-d", `{"handle":"`+put.Handle+`"}`, d.Addr, "registry.v1.RegistryService/Resolve")
		var res struct {
			Data string `json:"data"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Data != "aGVsbG8=" {
			t.Fatalf("Resolve printed %q (%v), want data \"aGVsbG8=\"", out, err)
		}
	})

	t.Run("health", func(t *testing.T) {
		out := grpcurl(t, bin, "-plaintext", d.Addr, "grpc.health.v1.Health/Check")
		var res struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != "SERVING" {
			t.Fatalf("Health/Check printed %q (%v), want status SERVING", out, err)
		}
	})
}

// TestStartupErrors: registryd refuses bad configuration at once, exits
// non-zero, and says what is wrong in one line, with no panic or stack
// trace.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	shortKey := filepath.Join(dir, "short.key")
	if err := os.WriteFile(shortKey, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	goodKey := writeKeyFile(t) // so that no "random key" warning is logged
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name string
		args []string
		env  []string
		want []string // substrings of the error line
	}{
		{name: "size flag", args: []string{"--max-object-bytes=lots"}, want: []string{"max-object-bytes", `"lots"`}},
		{name: "size env", env: []string{"REGISTRYD_MAX_OBJECT_BYTES=lots"}, want: []string{"REGISTRYD_MAX_OBJECT_BYTES", `"lots"`}},
		{name: "unknown flag", args: []string{"--no-such-flag"}, want: []string{"no-such-flag"}},
		{name: "log format flag", args: []string{"--log-format=xml"}, want: []string{"log-format", `"xml"`, "text or json"}},
		{name: "log format env", env: []string{"REGISTRYD_LOG_FORMAT=xml"}, want: []string{"log-format", `"xml"`}},
		{name: "key file too short", args: []string{"--key-file", shortKey}, want: []string{"key file", shortKey, "at least 32"}},
		{name: "key file missing", args: []string{"--key-file", filepath.Join(dir, "absent.key")}, want: []string{"key file", "absent.key"}},
		{name: "address in use", args: []string{"--key-file", goodKey, "--addr", busy.Addr().String()}, want: []string{busy.Addr().String(), "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := launch(t, append([]string{"--addr", "127.0.0.1:0"}, tt.args...), tt.env)
			start := time.Now()
			d.watchStderr(nil)
			t.Cleanup(func() { d.stop(t) })
			code := d.waitExit(t, 5*time.Second)
			took := time.Since(start)
			stderr := d.Stderr()
			if code == 0 {
				t.Fatalf("registryd exited 0, want non-zero\nstderr:\n%s", stderr)
			}
			if took > 3*time.Second {
				t.Errorf("registryd took %v to refuse its configuration", took)
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr contains %q (a panic or stack trace?):\n%s", bad, stderr)
				}
			}
			var line string
			for _, l := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(l, "registryd: ") {
					line = l
					break
				}
			}
			if line == "" {
				t.Fatalf("no \"registryd: ...\" error line on stderr:\n%s", stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("error line %q does not name %q", line, w)
				}
			}

			if got := strings.TrimSpace(stderr); got != line {
				t.Errorf("stderr holds more than the one error line %q:\n%s", line, stderr)
			}
		})
	}
}
