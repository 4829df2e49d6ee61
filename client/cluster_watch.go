package client

import (
	"context"
	"errors"
	"io"

	"github.com/weakref/registry/internal/handle"
)

// A cluster's Watcher is one Watcher per node of the handles it watches,
// each resuming by itself as a single address's does, merged: Recv
// returns each node's events in that node's order, and the nodes' events
// interleaved as they arrive. Sequences and epochs are each node's own.
// A part that ends other than with io.EOF ends the whole watch with its
// error: ErrNodeUnavailable if its node left the cluster, ErrRestarted if
// the node came back as a new run; watch the other handles anew.

// errWatchSpansNodes: a sequence to resume from is one node's.
var errWatchSpansNodes = errors.New("registry: FromSequence and ResumeAfter resume one node's watch: watch the handles of each node apart")

// watchMerge is the state of a cluster's Watcher.
type watchMerge struct {
	parts []*Watcher
	items chan watchItem // from each part's pump
	live  int            // parts that have not ended with io.EOF; owned by Recv
}

type watchItem struct {
	ev  Event
	err error // the part's end, io.EOF included
}

// watch is WatchWith on a cluster.
func (r *router) watch(ctx context.Context, handles []string, opts []WatchOption) (*Watcher, error) {
	t, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	groups := map[*node][]string{}
	var order []*node
	for _, h := range handles {
		tag, ok := handle.NodeOf(handle.Object, h)
		var n *node
		switch {
		case ok:
			if n = t.nodes[tag]; n == nil {
				return nil, nodeUnavailable(tag)
			}
		default: // no node tag: the node says what is wrong with it
			if n, err = t.place(r, nil); err != nil {
				return nil, err
			}
		}
		if groups[n] == nil {
			order = append(order, n)
		}
		groups[n] = append(groups[n], h)
	}
	if len(opts) > 0 && len(order) > 1 {
		return nil, errWatchSpansNodes
	}
	if len(order) == 0 { // no handles: as one node answers that
		n, err := t.place(r, nil)
		if err != nil {
			return nil, err
		}
		order = append(order, n)
	}
	wctx, cancel := context.WithCancel(ctx)
	m := &watchMerge{items: make(chan watchItem)}
	for _, n := range order {
		part, err := n.c.WatchWith(wctx, groups[n], opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		m.parts = append(m.parts, part)
	}
	w := &Watcher{ctx: wctx, cancel: cancel, handles: handles, merge: m}
	m.live = len(m.parts)
	for i, part := range m.parts {
		go w.pump(r, order[i], part)
	}
	return w, nil
}

// pump hands part's events to Recv until part ends or the watch does.
func (w *Watcher) pump(r *router, n *node, part *Watcher) {
	for {
		ev, err := part.Recv()
		if err != nil && !errors.Is(err, io.EOF) && w.ctx.Err() == nil {
			// Its connection was closed as the node left, or restarted.
			switch gone, restarted := r.leftBy(n); {
			case gone:
				err = nodeUnavailable(n.tag)
			case restarted:
				err = nodeRestarted(n.tag)
			}
		}
		select {
		case w.merge.items <- watchItem{ev: ev, err: err}:
		case <-w.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// recvMerged is Recv of a cluster's Watcher: io.EOF once every node's
// part has ended so; the first other end of a part ends the whole watch.
func (w *Watcher) recvMerged() (Event, error) {
	m := w.merge
	for w.err == nil {
		if m.live == 0 {
			w.err = io.EOF
			break
		}
		select {
		case it := <-m.items:
			switch {
			case it.err == nil:
				w.last.Store(it.ev.Seq)
				return it.ev, nil
			case errors.Is(it.err, io.EOF):
				m.live--
			default:
				w.err = it.err
				w.cancel()
			}
		case <-w.ctx.Done():
			w.err = w.ctx.Err()
		}
	}
	return Event{}, w.err
}
