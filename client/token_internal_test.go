package client

import "testing"

// TestTokenGoesWithoutTLSToLoopbackOnly: a token is sent in clear text to
// a loopback registryd only, where no network path can read it.
func TestTokenGoesWithoutTLSToLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7600":               true,
		"[::1]:7600":                   true,
		"localhost:7600":               true,
		"dns:///localhost:7600":        true,
		"registry.example.org:7600":    false,
		"10.0.0.7:7600":                false,
		"passthrough:///10.0.0.7:7600": false,
		"127.0.0.1":                    false, // no port: not an address Dial takes
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
	if !(bearerToken{token: "t"}).RequireTransportSecurity() {
		t.Error("a token to a remote registryd does not require TLS")
	}
}
