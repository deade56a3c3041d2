//! gf_queue: completion queues (gf_queue_*), and the calls whose outcome goes to one
//! (gf_invoke_queued[_ex]).

use std::ffi::c_char;

use super::call::{gf_call, start};
use super::call_options::{gf_call_options, options_arg, timeout_options};
use super::check_blocking_allowed;
use super::client::{gf_client, prepare};
use super::result::gf_result;
use crate::async_call::{Place, Prepared};
use crate::client::ResponseMetadata;
use crate::queue::CompletionQueue;
use crate::runtime;
use crate::Status;

/// One finished call, as `gf_queue_poll` hands it out.
#[repr(C)]
pub struct gf_completion {
    /// The tag given to `gf_invoke_queued`.
    pub tag: u64,
    /// The call's outcome, owned by the caller: free it with `gf_result_free`.
    pub result: *mut gf_result,
}

/// A queue of finished async calls, with a file descriptor that is readable while some wait.
/// Opaque. Thread-safe. Make with `gf_queue_new`, free with `gf_queue_free`.
pub struct gf_queue {
    queue: CompletionQueue<Completion>,
}

/// A finished call waiting in a queue; its result is freed with it unless handed out.
struct Completion {
    tag: u64,
    result: Box<gf_result>,
}

fn queue_arg<'a>(queue: *const gf_queue) -> Option<&'a gf_queue> {
    // SAFETY: NULL checked; the caller promises a live queue from gf_queue_new.
    (!queue.is_null()).then(|| unsafe { &*queue })
}

/// Makes a completion queue: calls started with `gf_invoke_queued` put their outcome in it
/// instead of running a callback, and its file descriptor (`gf_queue_fd`) is readable while
/// outcomes wait. Wait on the descriptor with poll/epoll/select or an event loop (asyncio's
/// `add_reader`, Go's netpoller), then take the outcomes with `gf_queue_poll`. No caller code
/// runs on a library thread, and the outcomes of calls that end together are announced with
/// one wake-up.
///
/// - `queue_out`: required; receives the queue, freed with `gf_queue_free`. Untouched on
///   failure.
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0, 3 INVALID_ARGUMENT for a NULL `queue_out`, or 8 RESOURCE_EXHAUSTED when the
/// process has no file descriptor left. Never blocks; any thread. One queue may serve many
/// clients.
#[no_mangle]
pub extern "C" fn gf_queue_new(queue_out: *mut *mut gf_queue, error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, {
        if queue_out.is_null() {
            return Err(Status::invalid_argument("queue_out: must not be NULL"));
        }
        let queue = CompletionQueue::new()?;
        // SAFETY: checked for NULL.
        unsafe { *queue_out = Box::into_raw(Box::new(gf_queue { queue })) };
        Ok(())
    })
}

/// The queue's file descriptor: readable while outcomes wait (and now and then just after they
/// were taken: `gf_queue_poll` then returns 0). Only wait on it; never read, write or close it.
/// It stays open until `gf_queue_free` and the end of every call that uses the queue. -1 for
/// NULL (and after an internal failure). Any thread.
#[no_mangle]
pub extern "C" fn gf_queue_fd(queue: *const gf_queue) -> i32 {
    ffi_fn!(on_panic = -1, {
        queue_arg(queue).map(|q| q.queue.fd()).unwrap_or(-1)
    })
}

/// Moves up to `max` outcomes, oldest first, to `out`; returns how many (0 when none waits, for
/// a NULL queue, a NULL `out` or `max` 0, and after an internal failure). The caller owns each
/// `out[i].result` and frees it with `gf_result_free`. Never blocks; thread-safe.
///
/// After a wake-up, call it until it returns less than `max`: an edge-triggered waiter (epoll
/// with EPOLLET, Go's netpoller) is woken again only for outcomes that arrive after the queue
/// was emptied.
#[no_mangle]
pub extern "C" fn gf_queue_poll(
    queue: *mut gf_queue,
    out: *mut gf_completion,
    max: usize,
) -> usize {
    ffi_fn!(on_panic = 0, {
        let Some(q) = queue_arg(queue) else { return 0 };
        if out.is_null() || max == 0 {
            return 0;
        }
        // SAFETY: the caller promises room for `max` entries at `out`; take hands over at most
        // `max`.
        q.queue.take(max, unsafe { fill(out) })
    })
}

/// Blocks until an outcome waits in `queue`, then moves up to `max` outcomes, oldest first, to
/// `out` as `gf_queue_poll` does, and their count to `*taken_out` (at least 1). For a binding
/// whose caller waits on its own thread for its async call (started with `gf_invoke_queued`,
/// which it can cancel from another thread with `gf_call_cancel`): the thread waits as
/// `gf_invoke`'s caller does (README, "Threads and memory": a short spin when it is the only
/// caller waiting and recent calls were fast, then asleep), and the outcome's arrival wakes it
/// directly, without the descriptor.
///
/// - `queue`: required. Several threads may wait on one queue, and others may poll it; each
///   outcome goes to one of them. Outcomes a waiter leaves make the descriptor readable.
/// - `out`: required; room for `max` (>= 1) entries. The caller owns each `out[i].result`.
/// - `taken_out`: required.
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0, 3 INVALID_ARGUMENT for a NULL argument or `max` 0, or 9 FAILED_PRECONDITION on
/// a library thread (inside a callback), where it would block a thread the calls need; on an
/// error `out` and `*taken_out` are untouched. Blocks until an outcome arrives, for as long as
/// it takes: wait only while a call of the queue's is in flight (or an outcome waits), and never
/// free the queue meanwhile. Thread-safe.
#[no_mangle]
pub extern "C" fn gf_queue_wait(
    queue: *mut gf_queue,
    out: *mut gf_completion,
    max: usize,
    taken_out: *mut usize,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let q =
            queue_arg(queue).ok_or_else(|| Status::invalid_argument("queue: must not be NULL"))?;
        if out.is_null() || taken_out.is_null() || max == 0 {
            return Err(Status::invalid_argument(
                "out, taken_out: must not be NULL, max: must be at least 1",
            ));
        }
        check_blocking_allowed("gf_queue_wait")?;
        // SAFETY: as in gf_queue_poll: room for `max` entries, and wait hands over at most
        // `max`.
        let i = q.queue.wait(max, unsafe { fill(out) });
        // SAFETY: checked for NULL.
        unsafe { *taken_out = i };
        Ok(())
    })
}

/// Frees a queue. Outcomes still waiting are freed, and calls still in flight end as usual
/// (cancel them first if they should end now) but their outcomes are dropped. The descriptor
/// closes when the last of them ends: remove it from your event loop before freeing. NULL is
/// fine. Never blocks; any thread, once, after every other use of the queue.
#[no_mangle]
pub extern "C" fn gf_queue_free(queue: *mut gf_queue) {
    ffi_fn!({
        if queue.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in gf_queue_new; freed exactly once.
        let q = unsafe { Box::from_raw(queue) };
        q.queue.close();
    })
}

/// Starts a unary call whose outcome goes to `queue` with `tag`, and returns at once: the
/// completion-queue counterpart of `gf_invoke_async`.
///
/// - `client`, `method`, `request`/`request_len`, `timeout_ms`: as in `gf_invoke`; the request
///   is copied.
/// - `queue`: required; gets exactly one outcome for every call this function accepted, never
///   for a rejected one. A successful outcome carries the response bytes, not the response
///   headers and trailers (use `gf_invoke_queued_ex` for those).
/// - `tag`: any value; handed back with the outcome.
/// - `call_out`, `error_out`: as in `gf_invoke_async`.
///
/// Returns 0 when the call started, else 3 INVALID_ARGUMENT or 9 FAILED_PRECONDITION (closed
/// client). Never blocks; thread-safe, also inside a callback. The call runs among others on a
/// library thread; nothing of the caller's runs there.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn gf_invoke_queued(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    timeout_ms: u32,
    queue: *mut gf_queue,
    tag: u64,
    call_out: *mut *mut gf_call,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let p = prepare(
            client,
            method,
            request,
            request_len,
            Some(timeout_options(timeout_ms)),
        )?;
        start_queued(p, queue, tag, call_out, ResponseMetadata::Drop)
    })
}

/// Like `gf_invoke_queued`, with call options (NULL = defaults; copied at the start), and the
/// response headers and trailers kept in a successful outcome: the completion-queue counterpart
/// of `gf_invoke_async_ex`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn gf_invoke_queued_ex(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const gf_call_options,
    queue: *mut gf_queue,
    tag: u64,
    call_out: *mut *mut gf_call,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let p = prepare(client, method, request, request_len, options_arg(options))?;
        start_queued(p, queue, tag, call_out, ResponseMetadata::Keep)
    })
}

/// Writes the completions it is handed to `out`, `out + 1`, ... for the caller to free.
///
/// # Safety
/// `out` must have room for every completion the returned closure is called with.
unsafe fn fill(out: *mut gf_completion) -> impl FnMut(Completion) {
    let mut i = 0;
    move |c| {
        // SAFETY: the caller of `fill` promised room for this entry.
        unsafe {
            out.add(i).write(gf_completion {
                tag: c.tag,
                result: Box::into_raw(c.result),
            })
        };
        i += 1;
    }
}

fn start_queued(
    p: Prepared,
    queue: *mut gf_queue,
    tag: u64,
    call_out: *mut *mut gf_call,
    metadata: ResponseMetadata,
) -> Result<(), Status> {
    let queue = queue_arg(queue)
        .ok_or_else(|| Status::invalid_argument("queue: must not be NULL"))?
        .queue
        .clone();
    // The outcome only goes into the queue, which never blocks: the call runs on a call loop.
    let counted = runtime::queued_call();
    start(p, call_out, metadata, Place::Loop, move |r| {
        drop(counted);
        queue.push(Completion {
            tag,
            result: Box::new(gf_result::new(r)),
        })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallResult, Code};

    fn push(queue: *mut gf_queue, tag: u64) {
        let status = Status::new(Code::Aborted, format!("call {tag}"));
        queue_arg(queue).unwrap().queue.push(Completion {
            tag,
            result: Box::new(gf_result::new(CallResult::error(status))),
        });
    }

    /// Run under Miri by `make test-miri`: `fill` writes into the caller's array, the caller
    /// owns what it took, and freeing the queue frees what it still held.
    #[test]
    fn poll_hands_out_owned_results_in_order_and_free_drops_the_rest() {
        let mut queue = std::ptr::null_mut();
        assert_eq!(gf_queue_new(&mut queue, std::ptr::null_mut()), 0);
        assert!(gf_queue_fd(queue) >= 0);
        for tag in 1..=5 {
            push(queue, tag);
        }
        let mut out: [gf_completion; 3] = std::array::from_fn(|_| gf_completion {
            tag: 0,
            result: std::ptr::null_mut(),
        });
        assert_eq!(gf_queue_poll(queue, out.as_mut_ptr(), 0), 0);
        assert_eq!(gf_queue_poll(queue, std::ptr::null_mut(), 3), 0);
        assert_eq!(gf_queue_poll(queue, out.as_mut_ptr(), 3), 3);
        for (i, c) in out.iter().enumerate() {
            assert_eq!(c.tag, i as u64 + 1);
            assert_eq!(super::super::result::gf_result_code(c.result), 10);
            super::super::result::gf_result_free(c.result);
        }
        let mut taken = 0;
        assert_eq!(
            gf_queue_wait(queue, out.as_mut_ptr(), 1, &mut taken, std::ptr::null_mut()),
            0
        );
        assert_eq!((taken, out[0].tag), (1, 4));
        super::super::result::gf_result_free(out[0].result);
        // Tag 5 is still waiting: freeing the queue frees it.
        gf_queue_free(queue);
        assert_eq!(gf_queue_poll(std::ptr::null_mut(), out.as_mut_ptr(), 3), 0);
        assert_eq!(gf_queue_fd(std::ptr::null()), -1);
        gf_queue_free(std::ptr::null_mut());
    }
}
