package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	registry "github.com/weakref/registry/client"
)

// tokenRule is an auth file line granting token to name with role.
func tokenRule(token, name, role string) string {
	h := sha256.Sum256([]byte(token))
	return "token " + hex.EncodeToString(h[:]) + " " + name + " " + role + "\n"
}

// writeAuthFile replaces the auth file at path with text, by rename, as
// an operator's editor or a secret mount does.
func writeAuthFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// startAuthDaemon starts registryd with an auth file holding text, tokens
// allowed over plaintext loopback, and a reload interval long enough that
// only SIGHUP reloads within a test.
func startAuthDaemon(t *testing.T, text string) (*daemon, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth")
	writeAuthFile(t, path, text)
	return startDaemon(t, "--auth-file", path, "--auth-allow-plaintext", "--reload-interval", "1h"), path
}

// TestTokensGrantTheirRolesToRegistryctlAndTheClient: against registryd
// --auth-file, registryctl --token and the Go client's WithToken get
// exactly their role: a client puts and gets but may not gc or read
// stats, an admin may, a viewer reads stats only, and nobody without a
// token gets in.
func TestTokensGrantTheirRolesToRegistryctlAndTheClient(t *testing.T) {
	d, _ := startAuthDaemon(t, tokenRule("c-token", "alice", "client")+tokenRule("a-token", "ops", "admin")+tokenRule("v-token", "grafana", "viewer"))

	cl, err := registry.Dial(d.Addr, registry.WithToken("c-token"), registry.WithoutTracing())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	info, err := cl.Put(rpcCtx(t), []byte("hello"), registry.Linger(time.Minute)) // not collected before the gets below
	if err != nil {
		t.Fatalf("client token Put: %v", err)
	}
	if data, _, err := cl.Resolve(rpcCtx(t), info.Handle); err != nil || string(data) != "hello" {
		t.Fatalf("client token Resolve: %q, %v", data, err)
	}
	anon, err := registry.Dial(d.Addr, registry.WithoutTracing())
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Put(rpcCtx(t), []byte("x")); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Errorf("anonymous Put: %v, want ErrUnauthenticated", err)
	}

	for _, tt := range []struct {
		token string
		args  []string
		ok    bool
		say   string // in stderr when refused
	}{
		{"", []string{"stats"}, false, "CREDENTIALS_MISSING"},
		{"wrong", []string{"stats"}, false, "CREDENTIALS_INVALID"},
		{"c-token", []string{"get", info.Handle}, true, ""},
		{"c-token", []string{"stats"}, false, "ROLE_FORBIDDEN"},
		{"c-token", []string{"gc"}, false, "ROLE_FORBIDDEN"},
		{"c-token", []string{"ls"}, false, "ROLE_FORBIDDEN"},
		{"v-token", []string{"stats"}, true, ""},
		{"v-token", []string{"get", info.Handle}, false, "ROLE_FORBIDDEN"},
		{"a-token", []string{"gc"}, true, ""},
		{"a-token", []string{"ls"}, true, ""},
	} {
		args := tt.args
		if tt.token != "" {
			args = append([]string{"--token", tt.token}, args...)
		}
		r := ctl(t, d.Addr, args...)
		if (r.code == 0) != tt.ok || !strings.Contains(r.stderr, tt.say) {
			t.Errorf("want ok=%v saying %q; %s", tt.ok, tt.say, r)
		}
	}
	if !strings.Contains(d.Stderr(), "identity=alice") {
		t.Errorf("no request line names identity=alice:\n%s", d.Stderr())
	}
}

// TestSIGHUPReloadsTheAuthFile: a token added to the auth file works after
// SIGHUP, one removed stops working, and a file that does not parse keeps
// the rules in force, without a restart.
func TestSIGHUPReloadsTheAuthFile(t *testing.T) {
	d, path := startAuthDaemon(t, tokenRule("old", "alice", "client"))
	stats := func(token string) ctlResult { return ctl(t, d.Addr, "--token", token, "-w", "json", "get", "obj_none") }
	refusedAs := func(r ctlResult) string {
		for _, reason := range []string{"CREDENTIALS_INVALID", "HANDLE_MALFORMED"} {
			if strings.Contains(r.stderr, reason) {
				return reason
			}
		}
		return r.String()
	}
	// A malformed handle is the answer a caller who got in receives.
	if got := refusedAs(stats("old")); got != "HANDLE_MALFORMED" {
		t.Fatalf("old token before reload: %s", got)
	}
	hup := func() {
		t.Helper()
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, token, want string) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			got := refusedAs(stats(token))
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: after %v token %q answers %s, want %s\nregistryd:\n%s", what, waitTimeout, token, got, want, d.Stderr())
			}
			time.Sleep(pollInterval)
		}
	}

	writeAuthFile(t, path, tokenRule("new", "bob", "client"))
	hup()
	waitFor("added", "new", "HANDLE_MALFORMED")
	waitFor("removed", "old", "CREDENTIALS_INVALID")
	if !strings.Contains(d.Stderr(), `msg="auth file reloaded"`) || !strings.Contains(d.Stderr(), "rules=1") {
		t.Errorf("no info line for the reload with its rule count:\n%s", d.Stderr())
	}

	writeAuthFile(t, path, "token nothex bob client\n")
	hup()
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(d.Stderr(), "auth file not reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no error line for a file that does not parse:\n%s", d.Stderr())
		}
		time.Sleep(pollInterval)
	}
	if !strings.Contains(d.Stderr(), "line 1:") {
		t.Errorf("the error does not name the line:\n%s", d.Stderr())
	}
	if got := refusedAs(stats("new")); got != "HANDLE_MALFORMED" {
		t.Errorf("after a bad reload the rules in force changed: new token answers %s", got)
	}
}

// TestBadAuthFileStopsRegistrydWithTheLine: registryd does not start on
// an auth file that does not parse, and says which line is wrong.
func TestBadAuthFileStopsRegistrydWithTheLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth")
	writeAuthFile(t, path, "# callers\n"+tokenRule("t", "alice", "root"))
	d := launch(t, []string{"--addr", "127.0.0.1:0", "--auth-file", path}, nil)
	d.watchStderr(nil)
	if code := d.waitExit(t, startTimeout); code == 0 {
		t.Fatalf("registryd started on a bad auth file:\n%s", d.Stderr())
	}
	if s := d.Stderr(); !strings.Contains(s, "line 2") || !strings.Contains(s, `unknown role "root"`) {
		t.Errorf("stderr does not name line 2 and the role:\n%s", s)
	}
}
