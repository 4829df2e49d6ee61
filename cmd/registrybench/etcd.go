package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdCaller prepares the etcd peer's workload: etcd-get is a serializable
// single-key Range (answered by the member itself, no consensus round, the
// closest etcd has to Resolve), etcd-put a Put of the payload to a key of
// each worker's own (through raft and the WAL's fsync: Put's peer).
func etcdCaller(mode, addr string, payload []byte) (caller, func(), error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "registrybench", string(payload)); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("etcd at %s: %w", addr, err)
	}
	done := func() { c.Close() }
	switch mode {
	case "etcd-get":
		return func(ctx context.Context, _ int) error {
			r, err := c.Get(ctx, "registrybench", clientv3.WithSerializable())
			if err == nil && len(r.Kvs) != 1 {
				err = errors.New("etcd lost the key")
			}
			return err
		}, done, nil
	case "etcd-put":
		keys := make([]string, 0, 1024)
		for w := range cap(keys) {
			keys = append(keys, fmt.Sprint("registrybench/", w))
		}
		value := string(payload)
		return func(ctx context.Context, w int) error {
			_, err := c.Put(ctx, keys[w%len(keys)], value)
			return err
		}, done, nil
	}
	done()
	return nil, nil, fmt.Errorf("unknown -mode %q", mode)
}
