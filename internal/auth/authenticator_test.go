package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/weakref/registry/internal/testlog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // as an operator's editor does: a new inode
		t.Fatal(err)
	}
}

func newTestAuth(t *testing.T, text string, plaintext bool) (*Authenticator, string, *testlog.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth")
	writeFile(t, path, text)
	log := &testlog.Buffer{}
	a, err := New(Config{File: path, AllowPlaintext: plaintext, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a, path, log
}

// callCtx is a server call's context from addr, with TLS state when
// tlsInfo is not nil, and the token when it is not "".
func callCtx(addr net.Addr, tlsInfo *credentials.TLSInfo, token string) context.Context {
	p := &peer.Peer{Addr: addr}
	if tlsInfo != nil {
		p.AuthInfo = *tlsInfo
	}
	ctx := peer.NewContext(context.Background(), p)
	if token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", token))
	}
	return ctx
}

var (
	loopbackAddr = &net.TCPAddr{IP: net.IPv6loopback, Port: 1234}
	remoteAddr   = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1234}
)

func verified(c *x509.Certificate) *credentials.TLSInfo {
	return &credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}}
}

func TestAuthenticateTellsWhoCalls(t *testing.T) {
	a, _, _ := newTestAuth(t, "token "+hashOf("tok")+" alice client\ncert spiffe://example.org/ops admin\ncert db.example.org viewer\n", true)
	spiffe, _ := url.Parse("spiffe://example.org/ops")
	opsCert := &x509.Certificate{URIs: []*url.URL{spiffe}, DNSNames: []string{"ops.example.org"}}
	dbCert := &x509.Certificate{DNSNames: []string{"db.example.org", "other.example.org"}}
	strangerCert := &x509.Certificate{DNSNames: []string{"stranger.example.org"}}
	for _, tt := range []struct {
		name    string
		ctx     context.Context
		want    Identity
		wantErr error
	}{
		{"no credentials", callCtx(loopbackAddr, nil, ""), Identity{}, ErrCredentialsMissing},
		{"token on loopback, plaintext allowed", callCtx(loopbackAddr, nil, "Bearer tok"), Identity{"alice", RoleClient}, nil},
		{"token from afar without TLS", callCtx(remoteAddr, nil, "Bearer tok"), Identity{}, ErrTransportInsecure},
		{"bad token from afar without TLS is not looked at", callCtx(remoteAddr, nil, "Bearer nope"), Identity{}, ErrTransportInsecure},
		{"unknown token", callCtx(loopbackAddr, nil, "Bearer nope"), Identity{}, ErrCredentialsInvalid},
		{"not a bearer", callCtx(loopbackAddr, nil, "Basic dG9r"), Identity{}, ErrCredentialsInvalid},
		{"token over TLS", callCtx(remoteAddr, &credentials.TLSInfo{}, "Bearer tok"), Identity{"alice", RoleClient}, nil},
		{"SPIFFE certificate", callCtx(remoteAddr, verified(opsCert), ""), Identity{"spiffe://example.org/ops", RoleAdmin}, nil},
		{"DNS certificate", callCtx(remoteAddr, verified(dbCert), ""), Identity{"db.example.org", RoleViewer}, nil},
		{"certificate without a rule has no role", callCtx(remoteAddr, verified(strangerCert), ""), Identity{"stranger.example.org", RoleNone}, nil},
		{"unverified certificate", callCtx(remoteAddr, &credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{opsCert}}}, ""), Identity{}, ErrCredentialsMissing},
		{"token wins over certificate", callCtx(remoteAddr, verified(opsCert), "Bearer tok"), Identity{"alice", RoleClient}, nil},
		{"bad token beside a good certificate", callCtx(remoteAddr, verified(opsCert), "Bearer nope"), Identity{}, ErrCredentialsInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Authenticate(tt.ctx)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("got %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestTokensNeedTLSUnlessAllowedOnLoopback(t *testing.T) {
	a, _, _ := newTestAuth(t, "token "+hashOf("tok")+" alice client\n", false)
	if _, err := a.Authenticate(callCtx(loopbackAddr, nil, "Bearer tok")); !errors.Is(err, ErrTransportInsecure) {
		t.Errorf("got %v, want ErrTransportInsecure without --auth-allow-plaintext", err)
	}
}

func TestNoFileMakesEveryVerifiedCertificateAnAdmin(t *testing.T) {
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Authenticate(callCtx(remoteAddr, verified(&x509.Certificate{DNSNames: []string{"a.example.org"}}), ""))
	if err != nil || got != (Identity{"a.example.org", RoleAdmin}) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := a.Authenticate(callCtx(remoteAddr, &credentials.TLSInfo{}, "Bearer x")); !errors.Is(err, ErrCredentialsInvalid) {
		t.Errorf("token without a file: %v, want invalid", err)
	}
}

func TestReloadThatFailsKeepsTheRules(t *testing.T) {
	a, path, log := newTestAuth(t, "token "+hashOf("tok")+" alice client\n", true)
	writeFile(t, path, "token "+hashOf("tok")+" alice superuser\n")
	err := a.Reload()
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 1 {
		t.Fatalf("Reload: %v, want a parse error on line 1", err)
	}
	if got, err := a.Authenticate(callCtx(loopbackAddr, nil, "Bearer tok")); err != nil || got.Name != "alice" {
		t.Errorf("after a failed reload: %v, %v; want alice still", got, err)
	}
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 || !strings.Contains(log.String(), "line 1") {
		t.Errorf("log: want one error line naming line 1:\n%s", log)
	}
}

// TestWatchPicksUpTokenAddedAndRemoved: a token added to the file is
// accepted, and one removed refused, without a restart or a signal.
func TestWatchPicksUpTokenAddedAndRemoved(t *testing.T) {
	a, path, log := newTestAuth(t, "token "+hashOf("old")+" alice client\n", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Watch(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	writeFile(t, path, "token "+hashOf("new")+" bob admin\n")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, errNew := a.Authenticate(callCtx(loopbackAddr, nil, "Bearer new"))
		_, errOld := a.Authenticate(callCtx(loopbackAddr, nil, "Bearer old"))
		if errNew == nil && errors.Is(errOld, ErrCredentialsInvalid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: new token %v, old token %v", errNew, errOld)
		}
		time.Sleep(5 * time.Millisecond) // polling, with a deadline
	}
	if !strings.Contains(log.String(), "rules=1") {
		t.Errorf("log: want the reload at info with its rule count:\n%s", log)
	}

	// A file that does not parse is logged once, and the rules stay; the
	// next good version is picked up.
	writeFile(t, path, "token "+hashOf("new")+" bob superuser\n")
	for !strings.Contains(log.String(), "level=ERROR") {
		if time.Now().After(deadline) {
			t.Fatalf("no error for a bad file:\n%s", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Ten intervals in which the bad file does not change: no state to
	// wait for, only the absence of more error lines to see.
	time.Sleep(100 * time.Millisecond)
	writeFile(t, path, "token "+hashOf("newer")+" carol client\n")
	for {
		if _, err := a.Authenticate(callCtx(loopbackAddr, nil, "Bearer newer")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the good file after a bad one was not picked up:\n%s", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 {
		t.Errorf("the bad file was logged %d times, want once (it did not change in between):\n%s", n, log)
	}
}
