//! Library tasks that must never die silently: a panic inside one is caught and logged, the
//! owner is told (an instance then shows the failure in its state and last error), and the task
//! starts again after a pause.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

/// How long a task that panicked waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Spawns `make()`'s future on the current runtime; if it panics, logs the panic, calls
/// `on_panic` with its message and, after [`RESTART_DELAY`], runs `make()` again. Ends when a
/// run of the future returns.
pub(crate) fn spawn_supervised<M, F>(
    what: String,
    on_panic: impl Fn(&str) + Send + 'static,
    make: M,
) -> tokio::task::JoinHandle<()>
where
    M: FnMut() -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(supervise(what, on_panic, make))
}

async fn supervise<M, F>(what: String, on_panic: impl Fn(&str), mut make: M)
where
    M: FnMut() -> F,
    F: Future<Output = ()>,
{
    loop {
        match AssertUnwindSafe(make()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let why = panic_message(&*panic);
                log::error!(
                    "{what}: internal error ({why}); restarting it in {} ms",
                    RESTART_DELAY.as_millis()
                );
                on_panic(&why);
                tokio::time::sleep(RESTART_DELAY).await;
            }
        }
    }
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_reported_and_restarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let reported = Arc::new(Mutex::new(Vec::<String>::new()));
        let task = {
            let runs = runs.clone();
            let reported = reported.clone();
            spawn_supervised(
                "test task".into(),
                move |why| reported.lock().unwrap().push(why.to_string()),
                move || {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if run < 2 {
                            panic!("run {run} fails");
                        }
                    }
                },
            )
        };
        task.await.expect("the supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            *reported.lock().unwrap(),
            vec!["run 0 fails".to_string(), "run 1 fails".to_string()]
        );
    }
}
