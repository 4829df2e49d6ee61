package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/membership"
	"github.com/weakref/registry/internal/version"
)

// peerView is the server's view of the other nodes of the cluster. The
// handle codec, which answers for their handles, is built before
// registryd listens, and the membership only after, since it publishes
// the address listened on; until the node has joined, no peer is live.
type peerView struct {
	m atomic.Pointer[membership.Membership]
}

func (v *peerView) Lookup(node uint16) (addr string, epoch uint64, live bool) {
	m := v.m.Load()
	if m == nil {
		return "", 0, false
	}
	return m.Lookup(node)
}

// join joins --cluster, once registryd listens on lis and before it
// serves: a node is never registered before it can answer, and a node
// refused (its tag held, another key) never serves.
func (d *daemon) join(ctx context.Context, lis net.Listener) error {
	cfg := d.cfg
	addr := cfg.advertiseAddr
	if addr == "" {
		addr = advertised(cfg.addr, lis.Addr())
	}
	epoch := d.codec.Epoch()
	m, err := membership.New(membership.Config{
		Endpoints: cfg.etcdEndpoints,
		Cluster:   cfg.cluster,
		Member: cluster.Member{
			Node:    d.codec.Node(),
			Epoch:   epoch,
			Version: version.String(),
			Started: time.UnixMilli(int64(epoch)).UTC(),
			KeyID:   d.keyID,
		},
		Addr:   addr,
		TTL:    cfg.etcdTTL,
		Logger: d.log,
	})
	if err != nil {
		return err
	}
	// Long enough to wait out an earlier run's claim (a TTL), and for an
	// etcd that is slow to answer.
	jctx, cancel := context.WithTimeout(ctx, cfg.etcdTTL+30*time.Second)
	defer cancel()
	if err := m.Join(jctx); err != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		_ = m.Close(cctx)
		return fmt.Errorf("joining cluster %s: %w", cfg.cluster, err)
	}
	d.view.m.Store(m)
	d.member = m
	d.advertise = addr
	return nil
}

// leave revokes the node's etcd lease, so that peers and clients stop
// routing to it at once, before the drain; the peers' view stays as it
// was, for the answers of the calls still running. It is idempotent.
func (d *daemon) leave() {
	if d.member == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.member.Close(ctx); err != nil {
		d.log.Warn("left the cluster uncleanly", "err", err)
	}
	d.member = nil
}

// advertised is the address peers reach a node listening at l, from
// --addr: its host (not a wildcard, the configuration checked) and the
// port listened on, which differs from --addr's when that is 0.
func advertised(addr string, l net.Addr) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return l.String()
	}
	if ta, ok := l.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	}
	return net.JoinHostPort(host, port)
}
