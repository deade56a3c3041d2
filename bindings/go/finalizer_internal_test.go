//go:build !grpcfailover_gcstress

package grpcfailover

import (
	"context"
	"testing"
)

func TestFinalizeClosesTheClient(t *testing.T) {
	c, err := Dial("static:///127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	c.finalize()
	if c.ptr != nil {
		t.Fatal("finalize left the handle open")
	}
	if _, err := c.Invoke(context.Background(), "/a.B/C", nil); CodeOf(err) != Canceled {
		t.Fatalf("call after finalize: %v, want Canceled", err)
	}
}
