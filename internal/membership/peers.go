package membership

import (
	"context"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/weakref/registry/internal/cluster"
)

// watchPeers keeps m.peers to the cluster's endpoints until ctx ends,
// closing synced once it has read them the first time. The endpoints
// package's channel closes when its watch fails (a compaction past its
// revision, say); a new one is made, whose first list replaces the map.
// While etcd is away the watch waits, and the map stays as it was.
func (m *Membership) watchPeers(ctx context.Context, synced chan struct{}) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		ch, err := m.endpoints.NewWatchChannel(ctx)
		if err == nil {
			wait = 100 * time.Millisecond
			// The list comes first, already in the channel when it is
			// returned, and only when it is not empty.
			select {
			case ups, ok := <-ch:
				m.replacePeers(ups)
				if !ok {
					ch = nil
				}
			default:
				m.replacePeers(nil)
			}
			if synced != nil {
				close(synced)
				synced = nil
			}
			for ups := range ch {
				m.applyPeers(ups)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// replacePeers makes the map the nodes of a full list, in one step: a
// Lookup meanwhile sees the old map or the new.
func (m *Membership) replacePeers(ups []*endpoints.Update) {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	clear(m.peers)
	m.applyLocked(ups)
}

// applyPeers applies changes to the map.
func (m *Membership) applyPeers(ups []*endpoints.Update) {
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	m.applyLocked(ups)
}

func (m *Membership) applyLocked(ups []*endpoints.Update) {
	for _, up := range ups {
		tag, err := cluster.TagOfKey(up.Key)
		if err != nil {
			continue // not a node's key: nothing the cluster wrote
		}
		if up.Op == endpoints.Delete {
			delete(m.peers, tag)
			continue
		}
		member, err := cluster.MemberOf(up.Endpoint)
		if err != nil {
			m.log.Warn("a node's endpoint in etcd does not read", "key", up.Key, "err", err)
			continue
		}
		m.peers[tag] = Peer{Addr: up.Endpoint.Addr, Epoch: member.Epoch}
	}
}
