package client

import "testing"

// TestTokenGoesWithoutTLSToLoopbackOnly: a token is sent in clear text to
// a loopback registryd only, where no network path can read it.
func TestTokenGoesWithoutTLSToLoopbackOnly(t *testing.T) {
	if !(bearerToken{token: "t"}).RequireTransportSecurity() {
		t.Error("a token to a remote registryd does not require TLS")
	}
	if (bearerToken{token: "t", plaintext: true}).RequireTransportSecurity() {
		t.Error("a token to a loopback registryd requires TLS")
	}
}
