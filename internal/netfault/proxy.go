// Package netfault plays network failures for tests: a loopback TCP proxy
// that cuts connections, refuses new ones, loses the server's answers,
// blackholes both directions or stalls them, between a real client and a
// real server. It is imported by tests only.
package netfault

import (
	"context"
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy a test controls, between a client and a
// registryd: it can cut every connection through it, refuse new ones, or
// swallow the server's answers, to play a network failure. It is safe for
// concurrent use.
type Proxy struct {
	ctx context.Context // the test's: bounds every dial upstream
	lis net.Listener

	mu        sync.Mutex
	upstream  string
	conns     []net.Conn
	refuse    bool
	closed    bool       // Close was called: stop stalling
	muteDown  bool       // swallow what registryd sends
	blackhole bool       // swallow what either side sends
	stalled   bool       // hold what either side sends until unstalled
	unstall   *sync.Cond // signalled when stalled goes false; uses mu
	wg        sync.WaitGroup
}

// New listens on a free loopback port and forwards each connection to
// upstream; the proxy is closed when the test ends.
func New(t testing.TB, upstream string) *Proxy {
	t.Helper()
	// t.Context ends as the test does, so a dial to an upstream that hangs
	// does not outlive it.
	ctx := t.Context()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ctx: ctx, lis: lis, upstream: upstream}
	p.unstall = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse {
			p.mu.Unlock()
			c.Close()
			continue
		}
		var d net.Dialer
		up, err := d.DialContext(p.ctx, "tcp", p.upstream)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, up, true)
		go p.pipe(up, c, false)
	}
}

// pipe copies src to dst until either fails; down is registryd's side
// to the client's.
func (p *Proxy) pipe(dst, src net.Conn, down bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.pass(down) {
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// Drop cuts every connection through the proxy now, both sides: the
// client and registryd each see their TCP connection close.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// SetUpstream sends new connections to addr, as to a registryd that came
// back on another port.
func (p *Proxy) SetUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

// SetRefuse makes the proxy close new connections at once, or not.
func (p *Proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// SetMuteDown makes the proxy swallow, or not, every byte registryd sends
// to the client, while still passing on what the client sends: answers
// lost on the way back.
func (p *Proxy) SetMuteDown(mute bool) {
	p.mu.Lock()
	p.muteDown = mute
	p.mu.Unlock()
}

// SetBlackhole makes the proxy swallow, or not, every byte either side
// sends, while both connections stay open: a network path that silently
// loses everything, which only keepalive detects.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// SetStall makes the proxy hold, or not, what either side sends: while
// stalled nothing is forwarded and nothing lost; once unstalled, what was
// held is delivered. Bytes beyond the proxy's buffers wait in TCP, so the
// sender's flow control fills up as on a congested path.
func (p *Proxy) SetStall(on bool) {
	p.mu.Lock()
	p.stalled = on
	p.mu.Unlock()
	if !on {
		p.unstall.Broadcast()
	}
}

// pass waits while the proxy is stalled and says whether bytes read in
// direction down (registryd to client) are forwarded.
func (p *Proxy) pass(down bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled && !p.closed {
		p.unstall.Wait()
	}
	return !p.blackhole && (!down || !p.muteDown)
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() {
	p.lis.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.unstall.Broadcast()
	p.Drop()
	p.wg.Wait()
}
