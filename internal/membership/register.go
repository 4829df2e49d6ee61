package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weakref/registry/internal/cluster"
)

// errClaimRaced: the claim was gone between the transaction's compare and
// its read; the next attempt settles it.
var errClaimRaced = errors.New("the tag's claim changed while it was read")

// checkKeys refuses a cluster whose registered nodes have another handle
// key than this node's. Nodes that publish no fingerprint are let be.
func (m *Membership) checkKeys(ctx context.Context) error {
	ours := m.cfg.Member.KeyID
	if ours == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	eps, err := m.endpoints.List(ctx)
	if err != nil {
		return fmt.Errorf("reading the cluster's nodes from etcd %v: %w", m.cfg.Endpoints, err)
	}
	for key, ep := range eps {
		peer, err := cluster.MemberOf(ep)
		if err != nil || peer.KeyID == "" || peer.KeyID == ours {
			continue
		}
		tag, err := cluster.TagOfKey(key)
		if err != nil || tag == m.cfg.Member.Node {
			continue // the tag's holder is the claim's business
		}
		return &KeyMismatchError{Cluster: m.cfg.Cluster, Node: tag, Addr: ep.Addr, Theirs: peer.KeyID, Ours: ours}
	}
	return nil
}

// claimAtStart registers the node for Join. A claim of the tag at this
// node's own address is an earlier run's, which crashed or was killed
// before it could revoke its lease (this run listens on that address
// now): it is waited out for its lease's remaining TTL, so that a node
// restarted at once by its supervisor does not fail for a claim of its
// own.
func (m *Membership) claimAtStart(ctx context.Context) (clientv3.LeaseID, error) {
	var deadline time.Time
	for {
		id, err := m.register(ctx, 0)
		var taken *TagTakenError
		if !errors.As(err, &taken) || taken.Holder.Addr != m.cfg.Addr || taken.Holder.Epoch == m.cfg.Member.Epoch {
			if errors.Is(err, errClaimRaced) {
				continue
			}
			return id, err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(m.cfg.TTL + time.Second)
			m.log.Info("waiting for an earlier run's claim of the node tag to expire", "holder_epoch", taken.Holder.Epoch, "within", m.cfg.TTL)
		}
		if time.Now().After(deadline) {
			return 0, err
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, err
		case <-t.C:
		}
	}
}

// register puts the node's keys in etcd under a lease: old if etcd still
// has it, else a new one. It returns the lease.
func (m *Membership) register(ctx context.Context, old clientv3.LeaseID) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	id, fresh := old, false
	if id != 0 {
		// etcd extends every lease by its TTL when it elects a leader, so
		// after an outage the old lease, and the keys on it, may well
		// have survived.
		if _, err := m.etcd.KeepAliveOnce(ctx, id); err != nil {
			if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return 0, err
			}
			id = 0
		}
	}
	if id == 0 {
		g, err := m.etcd.Grant(ctx, m.ttl)
		if err != nil {
			return 0, fmt.Errorf("etcd %v: lease: %w", m.cfg.Endpoints, err)
		}
		id, fresh = g.ID, true
	}
	err := m.claimTag(ctx, id)
	if err == nil {
		ep := m.cfg.Member.Endpoint(m.cfg.Addr)
		err = m.endpoints.AddEndpoint(ctx, m.nodeKey, ep, clientv3.WithLease(id))
	}
	if err != nil {
		if fresh {
			// A lease with nothing on it; it would expire anyway.
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = m.etcd.Revoke(rctx, id)
			rcancel()
		}
		return 0, err
	}
	return id, nil
}

// claimTag creates the tag's claim under lease id if nobody holds it. A
// claim already on id is this node's own.
func (m *Membership) claimTag(ctx context.Context, id clientv3.LeaseID) error {
	resp, err := m.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.tagKey), "=", 0)).
		Then(clientv3.OpPut(m.tagKey, m.claim, clientv3.WithLease(id))).
		Else(clientv3.OpGet(m.tagKey)).
		Commit()
	if err != nil {
		return fmt.Errorf("etcd %v: claiming node tag %d: %w", m.cfg.Endpoints, m.cfg.Member.Node, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return errClaimRaced
	}
	if clientv3.LeaseID(kvs[0].Lease) == id {
		return nil
	}
	var holder cluster.Claim
	_ = json.Unmarshal(kvs[0].Value, &holder) // an unreadable claim is still a claim
	return &TagTakenError{Cluster: m.cfg.Cluster, Node: m.cfg.Member.Node, Holder: holder}
}

// keepAlive keeps lease id alive until ctx ends, and registers again each
// time it is lost: etcd went unanswering for the TTL, or the lease was
// revoked behind the node's back.
func (m *Membership) keepAlive(ctx context.Context, id clientv3.LeaseID) {
	for {
		ch, err := m.etcd.KeepAlive(ctx, id)
		if err == nil {
			for range ch {
				// The responses only say the lease lives on; the channel
				// closes when it is lost.
			}
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("lost the cluster: etcd has not renewed this node's lease for its TTL, so peers count it gone; serving on, and registering again once etcd answers",
			"lease", fmt.Sprintf("%x", int64(id)), "ttl", m.cfg.TTL)
		m.setLease(0)
		id = m.reregister(ctx, id)
		if id == 0 {
			return
		}
		m.setLease(id)
		m.log.Info("registered again in the cluster", "addr", m.cfg.Addr, "lease", fmt.Sprintf("%x", int64(id)))
	}
}

// reregister registers the node until it succeeds or ctx ends (then 0),
// waiting between attempts from 250ms up to half the TTL: etcd back, the
// node is registered again within half a TTL. A tag another process took
// meanwhile is an error line on every attempt.
func (m *Membership) reregister(ctx context.Context, old clientv3.LeaseID) clientv3.LeaseID {
	wait, most := 250*time.Millisecond, max(time.Second, m.cfg.TTL/2)
	for {
		id, err := m.register(ctx, old)
		if err == nil {
			return id
		}
		var taken *TagTakenError
		if errors.As(err, &taken) {
			m.log.Error("cannot register again: "+taken.Error()+"; this node serves on, unregistered, and retries", "retry_in", wait)
		} else {
			m.log.Debug("registering again failed", "err", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0
		case <-t.C:
		}
		wait = min(2*wait, most)
	}
}
