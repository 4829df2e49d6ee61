package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/weakref/registry/internal/etcdtest"
)

func TestServerKeepsDataAcrossRestart(t *testing.T) {
	s := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client(t).Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	s.Stop()
	s.Restart(t)
	resp, err := s.Client(t).Get(ctx, "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get after restart = %v, want k=v", resp.Kvs)
	}
}
