//! Async calls started from outside the runtime: a call's checked arguments, where it runs, and
//! the guarantee that every accepted call reports exactly one outcome (its result, INTERNAL when
//! it panics, INTERNAL when it is dropped unfinished). The C ABI's async and queued calls are
//! built on this; what is C-specific (handles, callbacks, queues of C results) stays in ffi/.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::client::ResponseMetadata;
use crate::runtime;
use crate::{CallOptions, CallResult, Client, Status};

/// A call's checked arguments, owned (copied out of the caller's memory).
pub(crate) struct Prepared {
    pub(crate) client: Client,
    pub(crate) method: String,
    pub(crate) request: Bytes,
    pub(crate) opts: CallOptions,
}

/// Where an async call runs.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Place {
    /// A task of its own: for completions that may block (a Python callback waiting for the
    /// GIL), which then hold up no other call.
    Task,
    /// A call loop (`runtime::run_on_call_loop`), with the completion run there: only when it
    /// never blocks.
    Loop,
}

impl Place {
    /// Where the calls of a client with callbacks run.
    pub(crate) fn for_callbacks(client: &Client) -> Place {
        if client.nonblocking_callbacks() {
            Place::Loop
        } else {
            Place::Task
        }
    }
}

/// The status of a panic caught at a boundary (an async call here, an exported C function in
/// ffi/): INTERNAL, with the panic's message.
pub(crate) fn panic_status(panic: Box<dyn std::any::Any + Send>) -> Status {
    let what = crate::task::panic_message(&*panic);
    Status::internal(format!("internal error in grpc-failover: {what}"))
}

/// An async call's completion, run exactly once: with the call's result, or with INTERNAL when
/// it is dropped before it ran (its call dropped unfinished, or never started because its loop
/// or task was torn down).
struct OnceDone<F: FnOnce(CallResult)>(Option<F>);

impl<F: FnOnce(CallResult)> OnceDone<F> {
    fn call(&mut self, result: CallResult) {
        if let Some(done) = self.0.take() {
            // The completion runs the caller's code (a C callback): a panic there must not take
            // down the call loop that other calls share.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| done(result))) {
                log::error!("{}", panic_status(panic).message);
            }
        }
    }

    /// Runs `call` to its end and reports its result; a panic inside it is reported as
    /// INTERNAL.
    async fn run(mut self, call: impl Future<Output = CallResult>) {
        let result = AssertUnwindSafe(call)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| CallResult::error(panic_status(panic)));
        self.call(result);
    }
}

impl<F: FnOnce(CallResult)> Drop for OnceDone<F> {
    fn drop(&mut self) {
        if self.0.is_some() && !std::thread::panicking() {
            self.call(CallResult::error(Status::internal(
                "internal error in grpc-failover: the call was dropped before it ended",
            )));
        }
    }
}

/// Starts the call on the runtime, at `place`; `done` runs exactly once with its result (with
/// the response metadata of a successful call only when `metadata` says Keep). Cancelling
/// `cancel` ends the call with CANCELLED.
pub(crate) fn spawn(
    p: Prepared,
    cancel: CancellationToken,
    metadata: ResponseMetadata,
    place: Place,
    done: impl FnOnce(CallResult) + Send + 'static,
) {
    // Made before the call is handed over, so that a call whose loop or task never starts it
    // still reports.
    let done = OnceDone(Some(done));
    let call = move || async move {
        done.run(
            p.client
                .invoke_with(&p.method, p.request, &p.opts, Some(&cancel), metadata),
        )
        .await
    };
    match place {
        Place::Loop => runtime::run_on_call_loop(call),
        Place::Task => {
            runtime::handle().spawn(call());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;
    use std::sync::{Arc, Mutex};

    /// A completion that records what it was called with.
    fn recorder() -> (
        Arc<Mutex<Vec<CallResult>>>,
        impl FnOnce(CallResult) + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        (seen, move |r: CallResult| into.lock().unwrap().push(r))
    }

    fn codes(seen: &Mutex<Vec<CallResult>>) -> Vec<Code> {
        seen.lock().unwrap().iter().map(|r| r.status.code).collect()
    }

    #[test]
    fn a_completion_runs_once_also_when_called_twice_or_dropped_unrun() {
        let (seen, done) = recorder();
        let mut once = OnceDone(Some(done));
        once.call(CallResult::error(Status::cancelled("x")));
        once.call(CallResult::error(Status::cancelled("again")));
        drop(once);
        let (unrun, done) = recorder();
        drop(OnceDone(Some(done)));
        assert_eq!(codes(&seen), vec![Code::Cancelled]);
        assert_eq!(codes(&unrun), vec![Code::Internal]);
    }

    #[tokio::test]
    async fn a_call_that_ends_reports_its_result_once() {
        let (seen, done) = recorder();
        OnceDone(Some(done))
            .run(async { CallResult::error(Status::cancelled("ended")) })
            .await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].status, Status::cancelled("ended"));
    }

    #[tokio::test]
    async fn a_call_that_panics_reports_internal_once() {
        let (seen, done) = recorder();
        OnceDone(Some(done))
            .run(async { panic!("the call broke") })
            .await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].status.code, Code::Internal);
        assert!(
            seen[0].status.message.contains("the call broke"),
            "{}",
            seen[0].status.message
        );
    }

    #[test]
    fn a_call_dropped_unfinished_reports_internal_once() {
        let (seen, done) = recorder();
        let mut call = Box::pin(OnceDone(Some(done)).run(std::future::pending()));
        // Polled once (the call is under way), then dropped: its loop or task was torn down.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(codes(&seen).is_empty());
        drop(call);
        assert_eq!(codes(&seen), vec![Code::Internal]);
    }

    #[tokio::test]
    async fn a_panicking_completion_is_contained() {
        OnceDone(Some(|_: CallResult| panic!("the callback broke")))
            .run(async { CallResult::error(Status::cancelled("ended")) })
            .await;
    }

    /// Through `spawn`, at both places: a call to an address that refuses connections fails
    /// fast, and reports once; a cancelled call reports CANCELLED once.
    #[test]
    fn spawned_calls_report_exactly_once_at_either_place() {
        let client = Client::connect("static:///127.0.0.1:1", crate::Options::default())
            .expect("a static target");
        for place in [Place::Task, Place::Loop] {
            let (seen, done) = recorder();
            let (tx, rx) = std::sync::mpsc::channel();
            let p = Prepared {
                client: client.clone(),
                method: "/gf.test.Echo/Echo".to_string(),
                request: Bytes::from_static(b"hi"),
                opts: CallOptions {
                    wait_for_ready: Some(false),
                    ..CallOptions::default()
                },
            };
            spawn(
                p,
                CancellationToken::new(),
                ResponseMetadata::Drop,
                place,
                move |r| {
                    done(r);
                    tx.send(()).unwrap();
                },
            );
            rx.recv().expect("one outcome");
            assert_eq!(codes(&seen), vec![Code::Unavailable], "{place:?}");

            let (seen, done) = recorder();
            let (tx, rx) = std::sync::mpsc::channel();
            let p = Prepared {
                client: client.clone(),
                method: "/gf.test.Echo/Echo".to_string(),
                request: Bytes::new(),
                opts: CallOptions {
                    wait_for_ready: Some(true),
                    ..CallOptions::default()
                },
            };
            let cancel = CancellationToken::new();
            spawn(p, cancel.clone(), ResponseMetadata::Drop, place, move |r| {
                done(r);
                tx.send(()).unwrap();
            });
            cancel.cancel();
            rx.recv().expect("one outcome");
            assert_eq!(codes(&seen), vec![Code::Cancelled], "{place:?}");
        }
        let _enter = runtime::handle().enter();
        client.close();
    }
}
