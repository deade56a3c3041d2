//! One attempt: a unary call with raw request bytes on one connection, through
//! `tonic::client::Grpc` and the pass-through codec. It takes the connection's sender and says
//! what happened (including whether the connection refused the request); what that means for
//! the instance is the balancer's business ([`crate::balancer::Picked::finish`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Uri;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;

use crate::client::{CallResult, ResponseMetadata};
use crate::config::Compression;
use crate::metadata::{self, Metadata};
use crate::status::{Code, Status};
use crate::transport::{self, Conn, RawCodec, Sender, WireBytes};

/// What every attempt of a call sends, and how it reads the response.
pub struct Request<'a> {
    pub path: &'a PathAndQuery,
    pub message: Bytes,
    pub metadata: &'a Metadata,
    pub max_response_bytes: usize,
    /// The option or method config field `max_response_bytes` comes from, for the error.
    pub response_limit: &'static str,
    /// How the request message is compressed.
    pub compression: Compression,
    pub response_metadata: ResponseMetadata,
}

/// Server pushback (gRFC A6 `grpc-retry-pushback-ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    Delay(Duration),
    Stop,
}

/// How one attempt ended.
pub struct Attempt {
    pub result: CallResult,
    /// Response headers arrived: the call is committed and is not retried (A6).
    pub committed: bool,
    /// The request never left the client: retry without counting an attempt (A6).
    pub transparent: bool,
    /// The connection takes no new streams (a GOAWAY, an I/O error): it must not be handed out
    /// again.
    pub refused: bool,
    pub pushback: Option<Pushback>,
}

/// The instance an attempt goes to: its connection, and its address for messages.
pub struct Destination<'a> {
    pub sender: &'a Sender,
    pub addr: &'a str,
    pub origin: &'a Uri,
}

/// Sends one attempt of `req` to `to`. `timeout` is what is left of the call's deadline (sent
/// as `grpc-timeout`; the caller enforces it locally too).
pub async fn run(
    to: Destination<'_>,
    req: &Request<'_>,
    timeout: Option<Duration>,
    previous_attempts: u32,
    wire: Option<Arc<WireBytes>>,
) -> Attempt {
    let Request {
        path,
        metadata,
        max_response_bytes,
        response_limit,
        compression,
        response_metadata,
        ..
    } = *req;
    let addr = to.addr;
    let mut grpc =
        tonic::client::Grpc::with_origin(Conn(to.sender.clone(), wire), to.origin.clone())
            .max_decoding_message_size(max_response_bytes)
            .max_encoding_message_size(usize::MAX)
            // Decompression is bounded by the same limit (tonic: RESOURCE_EXHAUSTED past it).
            .accept_compressed(CompressionEncoding::Gzip);
    if compression == Compression::Gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    if let Err(e) = grpc.ready().await {
        return Attempt {
            refused: true,
            ..failed(Status::unavailable(format!("{addr}: {e}")), true)
        };
    }
    let mut request = tonic::Request::new(req.message.clone());
    let md = request.metadata_mut();
    metadata::append_to(md, metadata);
    if previous_attempts > 0 {
        md.insert(
            "grpc-previous-rpc-attempts",
            MetadataValue::from(previous_attempts),
        );
    }
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    let response = match grpc.server_streaming(request, path.clone(), RawCodec).await {
        Ok(r) => r,
        Err(status) => {
            let refused =
                transport::conn_error(&status).is_some_and(|e| e.refuses_streams && e.never_sent);
            return Attempt {
                refused,
                ..from_status(addr, status, Vec::new(), false)
            };
        }
    };
    let (header_map, mut stream, _) = response.into_parts();
    let headers = || metadata::to_pairs(&header_map);
    let response = match stream.message().await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let st = Status::internal(format!("{addr}: the server sent no response message"));
            return committed_failure(st, headers());
        }
        Err(status)
            if status.code() == Code::OutOfRange
                && status.message().contains("message length too large") =>
        {
            // tonic says OUT_OF_RANGE for a response over the decode limit; gRPC says
            // RESOURCE_EXHAUSTED. tonic checks the length prefix before it buffers the message,
            // so the oversized message is never allocated; its message gives both sizes.
            let st = Status::resource_exhausted(format!(
                "{addr}: response exceeds {response_limit}: {}",
                status.message()
            ));
            return committed_failure(st, headers());
        }
        Err(status) => return from_status(addr, status, headers(), true),
    };
    match stream.trailers().await {
        Ok(trailers) => {
            let (headers, trailers) = match response_metadata {
                ResponseMetadata::Keep => (
                    headers(),
                    trailers
                        .as_ref()
                        .map(metadata::to_pairs)
                        .unwrap_or_default(),
                ),
                ResponseMetadata::Drop => (Vec::new(), Vec::new()),
            };
            Attempt {
                result: CallResult {
                    status: Status::new(Code::Ok, ""),
                    response,
                    headers,
                    trailers,
                },
                committed: true,
                transparent: false,
                refused: false,
                pushback: None,
            }
        }
        Err(status) => from_status(addr, status, headers(), true),
    }
}

/// A failure decided after the response headers arrived: not retried (A6).
fn committed_failure(status: Status, headers: Metadata) -> Attempt {
    Attempt {
        result: CallResult {
            headers,
            ..CallResult::error(status)
        },
        committed: true,
        transparent: false,
        refused: false,
        pushback: None,
    }
}

/// An attempt that ended before it reached an instance (no pick, or no connection).
pub fn failed(status: Status, transparent: bool) -> Attempt {
    Attempt {
        result: CallResult::error(status),
        committed: false,
        transparent,
        refused: false,
        pushback: None,
    }
}

/// Maps a tonic status (a server's status, or a transport error) to an attempt outcome.
fn from_status(addr: &str, status: tonic::Status, headers: Metadata, committed: bool) -> Attempt {
    let pushback = status.metadata().get("grpc-retry-pushback-ms").map(|v| {
        match v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(ms) if ms >= 0 => Pushback::Delay(Duration::from_millis(ms as u64)),
            _ => Pushback::Stop,
        }
    });
    let trailers = metadata::to_pairs(status.metadata());
    let source_is_conn = transport::conn_error(&status).cloned();
    // The connection broke mid-response: that is UNAVAILABLE (tonic says UNKNOWN or INTERNAL),
    // and since a unary call shows the caller nothing before it ends, the call is not
    // committed by the headers that did arrive: only a status the server sent commits it.
    let lost = source_is_conn.is_none() && transport::connection_lost(&status);
    let committed = committed && !lost;
    let (code, message, transparent) = match source_is_conn {
        Some(e) => (
            if e.connection {
                Code::Unavailable
            } else {
                Code::Internal
            },
            format!("{addr}: {}", e.message),
            e.never_sent,
        ),
        None => {
            let transport = status.metadata().is_empty() && transport::is_transport_error(&status);
            let msg = if transport {
                format!("{addr}: {}", status.message())
            } else {
                status.message().to_string()
            };
            let code = if lost {
                Code::Unavailable
            } else {
                status.code()
            };
            (code, msg, false)
        }
    };
    Attempt {
        result: CallResult {
            status: Status::new(code, message),
            response: Bytes::new(),
            headers,
            trailers,
        },
        committed,
        transparent,
        refused: false,
        pushback,
    }
}
