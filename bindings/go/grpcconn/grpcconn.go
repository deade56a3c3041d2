// Package grpcconn makes a grpcfailover client a grpc.ClientConnInterface, so that the client
// code protoc-gen-go-grpc generates calls through it unchanged:
//
//	conn, err := grpcconn.Dial("etcd:///service/user", grpcfailover.WithServiceConfig(failoverJSON))
//	...
//	defer conn.Close()
//	reply, err := pb.NewUserClient(conn).Whoami(ctx, &pb.WhoamiRequest{})
//
// Messages are marshaled with grpc-go's codec registry, as grpc-go does; metadata, the call
// options and the errors are grpc-go's. It is its own module, like grpcstatus, so that the
// grpcfailover package itself never imports grpc-go.
package grpcconn

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/grpcstatus"
)

// ClientConn is a grpcfailover.Client seen as a grpc.ClientConnInterface: unary calls go
// through the library (resolving, load balancing, retries); streaming calls fail with
// Unimplemented until the library has them. It is safe for concurrent use.
type ClientConn struct {
	client *grpcfailover.Client
}

var _ grpc.ClientConnInterface = (*ClientConn)(nil)

// Dial is grpcfailover.Dial returning a ClientConn. Its errors are those of grpcfailover.Dial,
// readable with grpc-go's status.FromError (InvalidArgument for a malformed target or option).
func Dial(target string, opts ...grpcfailover.Option) (*ClientConn, error) {
	c, err := grpcfailover.Dial(target, opts...)
	if err != nil {
		return nil, grpcstatus.Error(err)
	}
	return New(c), nil
}

// New makes c a ClientConn. The ClientConn's Close closes c.
func New(c *grpcfailover.Client) *ClientConn {
	return &ClientConn{client: c}
}

// Client is the grpcfailover.Client calls go through (for its Stats, say).
func (cc *ClientConn) Client() *grpcfailover.Client { return cc.client }

// Close closes the client: see grpcfailover.Client.Close. It is idempotent and returns nil.
func (cc *ClientConn) Close() error { return cc.client.Close() }

// Invoke calls a unary method, as grpc.ClientConn.Invoke does.
//
// args is marshaled and the response unmarshaled into reply with the codec grpc-go would use:
// proto unless grpc.ForceCodec, grpc.ForceCodecV2 or grpc.CallContentSubtype picks another
// from encoding's registry (the request's content-type stays application/grpc). The metadata
// of metadata.NewOutgoingContext and AppendToOutgoingContext is sent, but for the keys grpc-go
// reserves (content-type, user-agent, te, grpc-*), which the library sets itself.
// grpc.Header, grpc.Trailer, grpc.WaitForReady, grpc.OnFinish and grpc.UseCompressor ("gzip";
// compressed responses are always accepted) are honoured; other call options (Peer,
// PerRPCCredentials, MaxCallRecvMsgSize, ...) are ignored. The
// context's deadline bounds all attempts and cancelling it cancels the call.
//
// Errors are status errors: status.FromError and status.Code read the call's code and
// message. A call ended by its context is Canceled or DeadlineExceeded, as in grpc-go, and
// also matches errors.Is(err, context.Canceled / context.DeadlineExceeded).
func (cc *ClientConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) (err error) {
	var (
		codec          encoding.CodecV2
		codecV1        encoding.Codec
		contentSubtype string
		header         *metadata.MD
		trailer        *metadata.MD
		callOpts       []grpcfailover.CallOption
	)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			header = o.HeaderAddr
		case grpc.TrailerCallOption:
			trailer = o.TrailerAddr
		case grpc.FailFastCallOption:
			callOpts = append(callOpts, grpcfailover.WaitForReady(!o.FailFast))
		case grpc.ForceCodecV2CallOption:
			codec, codecV1 = o.CodecV2, nil
		case grpc.ForceCodecCallOption:
			codec, codecV1 = nil, o.Codec
		case grpc.ContentSubtypeCallOption:
			contentSubtype = o.ContentSubtype
		case grpc.OnFinishCallOption:
			defer func(f func(error)) { f(err) }(o.OnFinish)
		case grpc.CompressorCallOption:
			callOpts = append(callOpts, grpcfailover.UseCompression(o.CompressorType))
		}
	}
	if codec == nil && codecV1 == nil {
		name := proto.Name
		if contentSubtype != "" {
			name = contentSubtype
		}
		// As grpc-go's getCodec: a codec registered with RegisterCodec wins over one of
		// RegisterCodecV2 under the same name.
		if codecV1 = encoding.GetCodec(name); codecV1 == nil {
			if codec = encoding.GetCodecV2(name); codec == nil {
				return status.Errorf(codes.Internal, "no codec registered for content-subtype %s", name)
			}
		}
	}

	var request []byte
	if codecV1 != nil {
		if request, err = codecV1.Marshal(args); err != nil {
			return status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
		}
	} else {
		data, err := codec.Marshal(args)
		if err != nil {
			return status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
		}
		// The library copies the request before Invoke returns, so a pooled buffer goes back
		// to its pool afterwards.
		defer data.Free()
		if len(data) == 1 {
			request = data[0].ReadOnlyData()
		} else {
			request = data.Materialize()
		}
	}

	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		if sent := outgoing(md); len(sent) > 0 {
			callOpts = append(callOpts, grpcfailover.WithMetadata(sent))
		}
	}
	var gotHeader, gotTrailer grpcfailover.Metadata
	if header != nil {
		callOpts = append(callOpts, grpcfailover.Header(&gotHeader))
	}
	if trailer != nil {
		callOpts = append(callOpts, grpcfailover.Trailer(&gotTrailer))
	}

	response, callErr := cc.client.Invoke(ctx, method, request, callOpts...)
	if header != nil {
		*header = metadata.MD(gotHeader)
	}
	if trailer != nil {
		*trailer = metadata.MD(gotTrailer)
	}
	if callErr != nil {
		return grpcstatus.Error(callErr)
	}

	if codecV1 != nil {
		err = codecV1.Unmarshal(response, reply)
	} else {
		err = codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(response)}, reply)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return nil
}

// NewStream fails with Unimplemented: the library has unary calls only so far.
func (cc *ClientConn) NewStream(_ context.Context, desc *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Errorf(codes.Unimplemented, "grpcconn: streaming calls are not supported yet (%s, %s)", method, streamKind(desc))
}

func streamKind(desc *grpc.StreamDesc) string {
	switch {
	case desc == nil:
		return "stream"
	case desc.ClientStreams && desc.ServerStreams:
		return "bidirectional streaming"
	case desc.ClientStreams:
		return "client streaming"
	default:
		return "server streaming"
	}
}

// outgoing is md without the keys grpc-go never sends from metadata (pseudo-headers and its
// reserved headers) and without the other grpc-* keys, which the library reserves for itself.
func outgoing(md metadata.MD) grpcfailover.Metadata {
	for k := range md {
		if reserved(k) {
			delete(md, k) // md is FromOutgoingContext's copy
		}
	}
	return grpcfailover.Metadata(md)
}

func reserved(key string) bool {
	switch key {
	case "content-type", "user-agent", "te":
		return true
	}
	return strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-")
}
