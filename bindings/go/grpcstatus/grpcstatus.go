// Package grpcstatus connects the errors of package grpcfailover to grpc-go's status package,
// for programs that already use grpc-go.
//
// The grpcfailover package itself does not import grpc-go: a GRPCStatus() *status.Status
// method on its StatusError would make every user of the binding build grpc-go and protobuf.
// Programs that want grpc-go's view import this package instead: FromError, Code and Convert
// work like their namesakes in google.golang.org/grpc/status on grpcfailover errors (and pass
// any other error to them), and Error wraps an error so that grpc-go's own status.FromError,
// status.Code and status.Convert read it, for code that cannot be changed.
package grpcstatus

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	grpcfailover "grpc-failover/bindings/go"
)

// FromError is status.FromError that also understands grpcfailover errors, including the
// context errors of cancelled calls (as grpc-go reports them: Canceled, DeadlineExceeded).
func FromError(err error) (*status.Status, bool) {
	var se *grpcfailover.StatusError
	if errors.As(err, &se) {
		return status.New(codes.Code(se.Code()), se.Message()), true
	}
	return status.FromError(err)
}

// Code is status.Code that also understands grpcfailover errors.
func Code(err error) codes.Code {
	s, _ := FromError(err)
	return s.Code()
}

// Convert is status.Convert that also understands grpcfailover errors.
func Convert(err error) *status.Status {
	s, _ := FromError(err)
	return s
}

// Error returns err with a GRPCStatus method when it holds a *grpcfailover.StatusError, so that
// grpc-go's status.FromError, status.Code and errors.As with interface{ GRPCStatus() } see its
// code; errors.Is and errors.As reach the original error through Unwrap. Other errors, and nil,
// are returned as they are.
func Error(err error) error {
	var se *grpcfailover.StatusError
	if !errors.As(err, &se) {
		return err
	}
	return &statusError{err: err, status: status.New(codes.Code(se.Code()), se.Message())}
}

type statusError struct {
	err    error
	status *status.Status
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return e.status }
