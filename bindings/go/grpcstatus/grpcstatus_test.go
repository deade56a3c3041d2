package grpcstatus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/grpcstatus"
	"grpc-failover/bindings/go/internal/testenv"
)

func TestGRPCStatusOfCallErrors(t *testing.T) {
	s := testenv.StartServer(t, "s", "--delay-ms", "2000")
	c, err := grpcfailover.Dial("static:///" + s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, err = c.Invoke(context.Background(), "bad method", nil)
	st, ok := grpcstatus.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument || st.Message() == "" {
		t.Fatalf("FromError(%v) = %v, %v", err, st, ok)
	}
	if grpcstatus.Code(err) != codes.InvalidArgument || grpcstatus.Convert(err).Code() != codes.InvalidArgument {
		t.Fatal("Code / Convert")
	}
	// grpc-go's own functions read the wrapped error.
	wrapped := grpcstatus.Error(err)
	if status.Code(wrapped) != codes.InvalidArgument {
		t.Fatalf("status.Code(Error(err)) = %v", status.Code(wrapped))
	}
	var se *grpcfailover.StatusError
	if !errors.As(wrapped, &se) || se.Code() != grpcfailover.InvalidArgument {
		t.Fatal("the wrapped error lost its *StatusError")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Invoke(ctx, "/test.Svc/Echo", nil)
	wrapped = grpcstatus.Error(err)
	if grpcstatus.Code(err) != codes.DeadlineExceeded || status.Code(wrapped) != codes.DeadlineExceeded ||
		!errors.Is(wrapped, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}

	if st, ok := grpcstatus.FromError(nil); !ok || st.Code() != codes.OK {
		t.Fatal("FromError(nil)")
	}
	plain := errors.New("plain")
	if grpcstatus.Error(plain) != plain || grpcstatus.Error(nil) != nil || grpcstatus.Code(plain) != codes.Unknown {
		t.Fatal("errors of other packages pass through")
	}
	if grpcstatus.Code(status.Error(codes.NotFound, "x")) != codes.NotFound {
		t.Fatal("grpc-go errors pass through to status.FromError")
	}
}

// The code numbering is grpc-go's.
func TestCodesMatchGRPCGo(t *testing.T) {
	for c := grpcfailover.OK; c <= grpcfailover.Unauthenticated; c++ {
		if got, want := c.String(), codes.Code(c).String(); got != want {
			t.Errorf("code %d: %q here, %q in grpc-go", c, got, want)
		}
	}
}
