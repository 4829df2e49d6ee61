// Package netaddr answers the one question registry's programs ask of an
// address before they trust it with a secret or a warning: does it stay
// on this machine?
package netaddr

import (
	"net"
	"strings"
)

// Loopback reports whether addr ("host:port", or a gRPC target such as
// "dns:///host:port") names a loopback host: localhost, 127.0.0.0/8 or
// ::1. A host name other than localhost is not taken on trust.
func Loopback(addr string) bool {
	if i := strings.LastIndex(addr, "/"); i >= 0 {
		addr = addr[i+1:]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
