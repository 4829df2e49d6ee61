package server

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// TestEveryReasonHasACodeAndNoMore: the catalog gives every reason of the
// API's ErrorReason enum a code, and names no other.
func TestEveryReasonHasACodeAndNoMore(t *testing.T) {
	for n, name := range registryv1.ErrorReason_name {
		r := registryv1.ErrorReason(n)
		info, ok := catalog[r]
		switch {
		case r == registryv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
			if ok {
				t.Errorf("the catalog gives %s, which is never sent, a code", name)
			}
		case !ok:
			t.Errorf("the catalog lacks %s", name)
		case info.code == codes.OK:
			t.Errorf("%s comes with code OK", name)
		}
	}
	if len(catalog) != len(registryv1.ErrorReason_name)-1 {
		t.Errorf("the catalog has %d reasons, the enum %d", len(catalog), len(registryv1.ErrorReason_name)-1)
	}
}

// TestDomainLimitsAreReasons: a limit the domain reports is a reason of
// the enum, since statusOf sends its name as the reason.
func TestDomainLimitsAreReasons(t *testing.T) {
	for _, l := range []string{registry.LimitObjectSize, registry.LimitPinnedBytes, lease.LimitLeases, lease.LimitPinsPerLease} {
		if _, ok := registryv1.ErrorReason_value[l]; !ok {
			t.Errorf("limit %s is not an ErrorReason", l)
		}
	}
}

// TestStatusesAreBuiltInOnePlace: no file of the server but status.go
// builds a status itself; every other one returns an error statusOf maps.
func TestStatusesAreBuiltInOnePlace(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if name == "status.go" || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				if fn.Name == "newStatus" {
					t.Errorf("%s: newStatus outside status.go; return an error statusOf maps", fset.Position(call.Pos()))
				}
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok && x.Name == "status" && (fn.Sel.Name == "Error" || fn.Sel.Name == "Errorf" || fn.Sel.Name == "New") {
					t.Errorf("%s: status.%s outside status.go; return an error statusOf maps", fset.Position(call.Pos()), fn.Sel.Name)
				}
			}
			return true
		})
	}
}

// TestRequestErrorSaysWhatTheStatusSays: an error answered on a stream
// carries the code, reason, message and metadata its status would.
func TestRequestErrorSaysWhatTheStatusSays(t *testing.T) {
	for _, err := range []error{
		&TooManyHandlesError{Max: 1000, Want: 1001},
		fmt.Errorf("%w: no kind", ErrRequestEmpty),
		&FieldError{Field: "open.grace", Why: "is negative"},
		&registry.LabelError{Key: "caf\xe9", Reason: "bad"},
	} {
		re := toRequestError(err, handle.Lease)
		st := status.Convert(toStatus(err, handle.Lease))
		if codes.Code(re.GetCode()) != st.Code() || re.GetReason() != reasonOf(st) || re.GetMessage() != st.Message() ||
			!maps.Equal(re.GetMetadata(), metadataOf(st.Err())) {
			t.Errorf("%v: RequestError %v, status %v %s %q %v", err, re, st.Code(), reasonOf(st), st.Message(), metadataOf(st.Err()))
		}
		if _, err := proto.Marshal(re); err != nil || !utf8.ValidString(re.GetMetadata()["key"]) {
			t.Errorf("%v: metadata not UTF-8: %v", err, re.GetMetadata())
		}
	}
}

// TestLimitRefusalsCarryQuotaFailure: a refusal for a limit carries a
// google.rpc.QuotaFailure naming the limit and its value, beside the
// ErrorInfo, so that clients written for Google's APIs read it as such.
func TestLimitRefusalsCarryQuotaFailure(t *testing.T) {
	for _, tt := range []struct {
		err    error
		reason string
		max    int64
	}{
		{&registry.LimitError{Limit: registry.LimitPinnedBytes, Max: 64, Want: 80}, ReasonPinnedBytesLimit, 64},
		{&registry.LimitError{Limit: registry.LimitWatchers, Max: 2, Want: 3}, ReasonWatcherLimit, 2},
		{&registry.LimitError{Limit: lease.LimitLeases, Max: 4, Want: 5}, ReasonLeaseLimit, 4},
		{&MessageTooLargeError{Size: 200, Max: 100}, ReasonMessageTooLarge, 100},
	} {
		st := status.Convert(toStatus(tt.err, handle.Object))
		var qf *errdetails.QuotaFailure
		for _, d := range st.Details() {
			if q, ok := d.(*errdetails.QuotaFailure); ok {
				qf = q
			}
		}
		if st.Code() != codes.ResourceExhausted || reasonOf(st) != tt.reason || qf == nil || len(qf.GetViolations()) != 1 {
			t.Errorf("%v: %v %s %v, want RESOURCE_EXHAUSTED %s with one quota violation", tt.err, st.Code(), reasonOf(st), qf, tt.reason)
			continue
		}
		if v := qf.GetViolations()[0]; v.GetQuotaId() != tt.reason || v.GetQuotaValue() != tt.max || v.GetSubject() == "" {
			t.Errorf("%v: violation %v, want quota %s of %d", tt.err, v, tt.reason, tt.max)
		}
	}
}
