package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Config configures an Authenticator.
type Config struct {
	// File is the auth file (see ParseRules). Empty: no file, and every
	// verified client certificate is its own identity with role admin
	// (authentication by the transport alone, as mTLS without RBAC);
	// tokens are then invalid.
	File string
	// AllowPlaintext accepts bearer tokens over connections without TLS
	// from loopback peers. Never from others: anyone on the path could
	// read the token.
	AllowPlaintext bool
	// Logger receives one line per reload. Default slog.Default().
	Logger *slog.Logger
}

// Authenticator says who a call is from. Its methods are safe for
// concurrent use; a reload replaces the rules at once for every call that
// starts after it.
type Authenticator struct {
	cfg   Config
	log   *slog.Logger
	rules atomic.Pointer[Rules]

	mu   sync.Mutex // one reload at a time; guards seen
	seen fileStamp  // the file as last read
}

// fileStamp is what the watcher compares to tell that the file changed.
type fileStamp struct {
	mtime time.Time
	size  int64
	inode uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.inode = st.Ino
	}
	return s
}

// New reads cfg.File and returns an Authenticator ready to use.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Authenticator{cfg: cfg, log: cfg.Logger}
	if cfg.File == "" {
		a.rules.Store(&Rules{certs: map[string]Role{}, anyCert: RoleAdmin})
		return a, nil
	}
	if _, err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// load reads and parses the file, and on success makes its rules the
// ones in force.
func (a *Authenticator) load() (*Rules, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.Open(a.cfg.File)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	// Seen even when it does not parse: the watcher tries again when the
	// file changes again (or on SIGHUP), rather than logging the same
	// error every interval.
	a.seen = stampOf(fi)
	r, err := ParseRules(f)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", a.cfg.File, err)
	}
	a.rules.Store(r)
	return r, nil
}

// Reload re-reads the auth file. When it does not parse, the rules in
// force stay, and the error says which line is wrong; Reload logs either
// outcome, so SIGHUP's handler needs do nothing with the error.
func (a *Authenticator) Reload() error {
	if a.cfg.File == "" {
		return nil
	}
	r, err := a.load()
	if err != nil {
		a.log.Error("auth file not reloaded; the rules read before stay in force", "err", err)
		return err
	}
	a.log.Info("auth file reloaded", "file", a.cfg.File, "rules", r.Len())
	return nil
}

// Watch stats the auth file every interval and reloads it when its
// modification time, size or inode changed (an editor's rename, a
// Kubernetes secret's symlink swap), until ctx ends.
func (a *Authenticator) Watch(ctx context.Context, interval time.Duration) {
	if a.cfg.File == "" || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(a.cfg.File)
		if err != nil {
			continue // a swap in progress; the next tick sees the new file
		}
		a.mu.Lock()
		changed := stampOf(fi) != a.seen
		a.mu.Unlock()
		if changed {
			_ = a.Reload() // Reload logged it
		}
	}
}

// Authenticate returns the identity of the call ctx belongs to, from its
// bearer token or its verified client certificate. A token wins over a
// certificate: it is the more specific grant, given to one caller, where
// a certificate may be a host's; a bad token is refused even beside a
// good certificate, so that a caller never runs as other than it asked.
func (a *Authenticator) Authenticate(ctx context.Context) (Identity, error) {
	p, _ := peer.FromContext(ctx)
	var tlsInfo *credentials.TLSInfo
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			tlsInfo = &ti
		}
	}
	rules := a.rules.Load()
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("authorization")) > 0 {
		if tlsInfo == nil && !(a.cfg.AllowPlaintext && loopback(p)) {
			return Identity{}, ErrTransportInsecure
		}
		token, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return Identity{}, ErrCredentialsInvalid
		}
		if id, ok := rules.token(token); ok {
			return id, nil
		}
		return Identity{}, ErrCredentialsInvalid
	}
	if tlsInfo != nil {
		if name, ok := CertIdentity(*tlsInfo); ok {
			if role := rules.cert(name); role != RoleNone {
				return Identity{Name: name, Role: role}, nil
			}
			// A verified certificate the file gives no role: known, and
			// refused by role, so that the answer says who it was taken
			// for.
			return Identity{Name: name, Role: RoleNone}, nil
		}
	}
	return Identity{}, ErrCredentialsMissing
}

// token finds the identity whose token hashes to token's SHA-256. It
// compares with every rule, in constant time each, so that its time
// depends only on how many rules there are.
func (r *Rules) token(token string) (Identity, bool) {
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range r.tokens {
		if subtle.ConstantTimeCompare(h[:], r.tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, false
	}
	return r.tokens[found].id, true
}

// cert is the role of a certificate identity: its own rule's, else the
// `cert *` rule's, else none.
func (r *Rules) cert(name string) Role {
	if role, ok := r.certs[name]; ok {
		return role
	}
	return r.anyCert
}

// CertIdentity is the identity of a verified client certificate: its
// SPIFFE ID if it has one, else its first DNS SAN. ok is false when there
// is no verified certificate, or it names neither.
func CertIdentity(ti credentials.TLSInfo) (string, bool) {
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	if ti.SPIFFEID != nil && checkName(ti.SPIFFEID.String()) == nil {
		return ti.SPIFFEID.String(), true
	}
	leaf := ti.State.VerifiedChains[0][0]
	return leafIdentity(leaf)
}

func leafIdentity(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" && checkName(u.String()) == nil {
			return u.String(), true
		}
	}
	if len(c.DNSNames) > 0 && checkName(c.DNSNames[0]) == nil {
		return c.DNSNames[0], true
	}
	return "", false
}

// loopback reports whether the peer connected from a loopback address.
func loopback(p *peer.Peer) bool {
	if p == nil || p.Addr == nil {
		return false
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
