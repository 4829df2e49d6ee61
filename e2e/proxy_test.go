package e2e

import (
	"net"
	"sync"
	"testing"
)

// proxy is a loopback TCP proxy the test controls, between a client and a
// registryd: it can cut every connection through it, and refuse new ones,
// to play a network failure. (The same as the client package's test proxy,
// which lives in that package's test files.)
type proxy struct {
	lis net.Listener

	mu       sync.Mutex
	upstream string
	conns    []net.Conn
	refuse   bool
	muteDown bool // swallow what registryd sends
	wg       sync.WaitGroup
}

// newProxy listens on a free loopback port and forwards each connection to
// upstream; it is closed when the test ends.
func newProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, upstream: upstream}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) accept() {
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
		up, err := net.Dial("tcp", p.upstream)
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
func (p *proxy) pipe(dst, src net.Conn, down bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !(down && p.downMuted()) {
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

// drop cuts every connection through the proxy now, both sides: the
// client and registryd each see their TCP connection close.
func (p *proxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// setUpstream sends new connections to addr, as to a registryd that came
// back on another port.
func (p *proxy) setUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

// setRefuse makes the proxy close new connections at once, or not.
func (p *proxy) setRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// setMuteDown makes the proxy swallow, or not, every byte registryd sends
// to the client, while still passing on what the client sends: answers
// lost on the way back.
func (p *proxy) setMuteDown(mute bool) {
	p.mu.Lock()
	p.muteDown = mute
	p.mu.Unlock()
}

func (p *proxy) downMuted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.muteDown
}

func (p *proxy) close() {
	p.lis.Close()
	p.drop()
	p.wg.Wait()
}
