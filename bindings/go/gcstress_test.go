//go:build grpcfailover_gcstress

package grpcfailover

import (
	"runtime"
	"testing"
	"unsafe"
)

// The mode must catch what it is for: a handle used after the last use of its owner, with no
// runtime.KeepAlive to keep the owner reachable.

//go:noinline
func useWithoutKeepAlive(c *Client) (caught any) {
	defer func() { caught = recover() }()
	ptr := c.ptr
	stressPoint(unsafe.Pointer(ptr))
	return nil
}

//go:noinline
func useWithKeepAlive(c *Client) (caught any) {
	defer func() { caught = recover() }()
	ptr := c.ptr
	stressPoint(unsafe.Pointer(ptr))
	runtime.KeepAlive(c)
	return nil
}

func newClient(t *testing.T) *Client {
	c, err := Dial("static:///127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGCStressCatchesMissingKeepAlive(t *testing.T) {
	if caught := useWithKeepAlive(newClient(t)); caught != nil {
		t.Fatalf("a kept-alive client was reported: %v", caught)
	}
	if caught := useWithoutKeepAlive(newClient(t)); caught == nil {
		t.Fatal("a client finalized while its handle was in use went unnoticed")
	}
}
