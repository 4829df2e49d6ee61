// Package e2e holds the end-to-end tests of registryd: they build the real
// binary once (TestMain), start it as a process on a free loopback port,
// and talk to it over real gRPC, as a client and an operator would.
//
// Run them with:
//
//	go test -race ./e2e/
//
// TestGrpcurlReflection needs the grpcurl binary on PATH or in
// $(go env GOPATH)/bin:
//
//	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
package e2e
