package server

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Request validation the adapter owns: what protobuf lets through but the
// API's contract refuses. Each check returns an error statusOf maps, so a
// refused request is answered like any other error, on a stream as a
// RequestError as in a unary status.

// FieldError reports a request field whose value is out of its range. It
// is INVALID_ARGUMENT, reason FIELD_INVALID, with ErrorInfo metadata
// `field` and a google.rpc.BadRequest naming the field.
type FieldError struct {
	// Field is the field's path in the request, as the .proto spells it:
	// "linger", "header.linger", "open.grace", "kinds[1]".
	Field string
	// Why says what is wrong with its value.
	Why string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Why }

// fieldErrorf returns a *FieldError for field.
func fieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Why: fmt.Sprintf(format, args...)}
}

// checkDuration refuses a Duration protobuf itself calls invalid (seconds
// beyond ±10,000 years, nanos out of range or of the other sign than
// seconds) and a negative one: every duration a request carries (linger,
// grace, hand-off) is a time to wait. nil, meaning 0, is valid. A valid
// duration above a server cap is not refused; the caller caps it.
func checkDuration(field string, d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return fieldErrorf(field, "is not a valid duration (seconds %d, nanos %d): seconds within ±315576000000, nanos within ±999999999 and of the same sign",
			d.GetSeconds(), d.GetNanos())
	}
	if d.GetSeconds() < 0 || d.GetNanos() < 0 {
		return fieldErrorf(field, "is negative (%s); give 0 or more", d.AsDuration())
	}
	return nil
}

// checkEnum refuses a value its enum does not declare, such as a number
// from a newer API or none at all. UNSPECIFIED (0) is declared; a caller
// that must refuse it says so itself.
func checkEnum(field string, v protoreflect.Enum) error {
	if v.Descriptor().Values().ByNumber(v.Number()) == nil {
		return fieldErrorf(field, "has value %d, which %s does not declare", v.Number(), v.Descriptor().Name())
	}
	return nil
}

// MaxContentTypeBytes bounds an object's content type. The server keeps
// it for as long as the object lives, on the putter's behalf, like its
// labels (which registry.ValidateLabels bounds): unbounded, 1-byte objects
// with 16 MiB content types held gigabytes the pinned-bytes limit never
// saw. 256 bytes holds any media type RFC 6838 allows (127 + "/" + 127)
// with room for parameters.
const MaxContentTypeBytes = 256

// checkMaxBytes refuses a string longer than limit bytes.
func checkMaxBytes(field, s string, limit int) error {
	if len(s) > limit {
		return fieldErrorf(field, "is %d bytes, more than the %d allowed", len(s), limit)
	}
	return nil
}

// indexed names the i-th element of a repeated field: "kinds[1]".
func indexed(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }
