package e2e

import (
	"testing"

	"github.com/weakref/registry/internal/netfault"
)

// proxy plays network failures between a client and a registryd.
type proxy = netfault.Proxy

func newProxy(t testing.TB, upstream string) *proxy { return netfault.New(t, upstream) }
