package grpcfailover

import (
	"context"
	"errors"
	"strconv"
)

// Code is a gRPC status code. The values are those of grpc-go's codes.Code, so
// codes.Code(err.Code()) converts without a table.
type Code uint32

// The gRPC status codes.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{
	"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
	"OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
}

// String returns the name grpc-go gives the code, e.g. "Unavailable".
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// StatusError is the error of a call, or of Dial or Register, that did not succeed: a gRPC
// status code and message. Get it with errors.As. When the call ended because its context was
// cancelled or its deadline passed, the error also wraps ctx.Err(), so
// errors.Is(err, context.Canceled) and errors.Is(err, context.DeadlineExceeded) work.
//
// For grpc-go's status.FromError and status.Code, see the grpcstatus subpackage.
type StatusError struct {
	code    Code
	message string
	cause   error
}

func newStatusError(code Code, message string) *StatusError {
	return &StatusError{code: code, message: message}
}

// contextError is the error of a call stopped by its context, shaped like grpc-go's
// status.FromContextError.
func contextError(err error) *StatusError {
	code := Unknown
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = Canceled
	}
	return &StatusError{code: code, message: err.Error(), cause: err}
}

// Code is the gRPC status code; never OK.
func (e *StatusError) Code() Code { return e.code }

// Message is the status message from the server or the library.
func (e *StatusError) Message() string { return e.message }

func (e *StatusError) Error() string {
	return "grpcfailover: code = " + e.code.String() + " desc = " + e.message
}

// Unwrap returns the context error that ended the call, or nil.
func (e *StatusError) Unwrap() error { return e.cause }

// CodeOf returns the gRPC code of err: OK for nil, the code of a *StatusError in its chain,
// Canceled or DeadlineExceeded for the context errors, Unknown for anything else. It is
// grpc-go's status.Code for errors of this package.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.code
	}
	return contextError(err).code
}
