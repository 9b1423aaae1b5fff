package abi

import (
	"context"
	"errors"
	"fmt"
)

// ErrorCode classifies a failure so that callers can act on it without
// parsing messages. It travels in Envelope.Error.Code.
type ErrorCode string

// The error codes of ABI v1. A caller that sees an unknown code treats it as
// CodeInternal.
const (
	CodeNotFound          ErrorCode = "not_found"          // no such service
	CodeMethodNotFound    ErrorCode = "method_not_found"   // the service has no such (public) method
	CodeBadRequest        ErrorCode = "bad_request"        // decode or validation failure
	CodeTimeout           ErrorCode = "timeout"            // the deadline passed
	CodeTrapped           ErrorCode = "trapped"            // the guest faulted; its instance was discarded
	CodeResourceExhausted ErrorCode = "resource_exhausted" // a limit was hit
	CodeForbidden         ErrorCode = "forbidden"          // not allowed for this caller or tenant
	CodeUnavailable       ErrorCode = "unavailable"        // the broker or the service cannot be reached now
	CodeInternal          ErrorCode = "internal"           // a fault in the host or a malformed guest reply
	CodeHandler           ErrorCode = "handler"            // the service's own error, with its message
)

// sendCodes maps the i32 result of the send import to codes; 0 means success.
var sendCodes = []ErrorCode{"", CodeNotFound, CodeMethodNotFound, CodeBadRequest, CodeTimeout,
	CodeTrapped, CodeResourceExhausted, CodeForbidden, CodeUnavailable, CodeInternal, CodeHandler}

// SendStatus returns the i32 the send import returns for err: 0 for nil, and
// a small positive number identifying the code otherwise.
func SendStatus(err error) int32 {
	if err == nil {
		return 0
	}
	code := CodeOf(err)
	for i, c := range sendCodes {
		if c == code {
			return int32(i)
		}
	}
	return SendStatus(&Error{Code: CodeInternal})
}

// SendError turns the i32 result of the send import back into an error.
func SendError(status int32) error {
	if status == 0 {
		return nil
	}
	code := CodeInternal
	if status > 0 && int(status) < len(sendCodes) {
		code = sendCodes[status]
	}
	return &Error{Code: code, Message: "send failed: " + string(code)}
}

// Error is a typed failure. It is both the Go error the host and SDKs return
// and the error field of a response Envelope.
type Error struct {
	Code    ErrorCode      `cbor:"code" json:"code"`
	Message string         `cbor:"message" json:"message"`
	Details map[string]any `cbor:"details,omitempty" json:"details,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is reports a match on code, so errors.Is(err, &abi.Error{Code: abi.CodeTimeout}) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Errorf builds an *Error with a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err: its own if err wraps an *Error, CodeTimeout
// for context deadline errors, and CodeInternal otherwise.
func CodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return CodeTimeout
	}
	return CodeInternal
}

// AsError converts any error into an *Error, keeping the code of a wrapped
// *Error and the text of everything else.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeOf(err), Message: err.Error()}
}
