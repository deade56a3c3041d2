//! The etcd resolver: a prefix Get, then a Watch from the Get's revision + 1, re-listed and
//! re-watched with backoff whenever the watch ends (compaction, a lost connection, a member
//! without a leader). Watches carry etcd's require-leader flag so a partitioned member cannot
//! keep the client on a silent, stale watch.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{decode_record, Endpoint, ResolverSink};
use crate::backoff::Backoff;
use crate::config::EtcdOptions;
use crate::metrics::ResolverEvent;
use crate::tls::Tls;

/// Connects an etcd client, over TLS when `tls` is given (loaded from `opts.tls`). Lazy for
/// plain connections; with a username it logs in, which needs a reachable member.
pub async fn connect(opts: &EtcdOptions, tls: Option<&Tls>) -> Result<Client, String> {
    // etcd answers pings more often than every 5 s (its --grpc-keepalive-min-time) with
    // GOAWAY, so ping every 10 s; a member that stops answering is left within 15 s.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(opts.dial_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(tls) = tls {
        options = options.with_tls(tls.for_etcd());
    }
    if let (Some(user), Some(password)) = (&opts.username, &opts.password) {
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    let connecting = Client::connect(opts.endpoints.clone(), Some(options));
    within(
        &format!("etcd {}", opts.endpoints.join(",")),
        opts.dial_timeout,
        connecting,
    )
    .await
}

/// Awaits an etcd request for at most `limit`; errors become "`what`: why".
pub(crate) async fn within<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} ms", limit.as_millis())),
    }
}

/// What the resolver knows between watch cycles: the instance set and the revision it reflects.
#[derive(Default)]
struct Known {
    instances: BTreeMap<Vec<u8>, Endpoint>,
    /// The last revision seen; a new watch resumes at revision + 1 instead of re-listing, so
    /// nothing that happened while the watch was down is lost. None forces a fresh list.
    revision: Option<i64>,
    /// Keys whose record was skipped as invalid, so that each is warned about once, not at
    /// every re-list.
    skipped: HashSet<Vec<u8>>,
    /// A watch is running (etcd said it was created): when it ends, that is a watch restart.
    watching: bool,
}

impl Known {
    /// Decodes a record; an invalid one is skipped with one warning per key.
    fn decode(&mut self, key: &[u8], value: &[u8]) -> Option<Endpoint> {
        match decode_record(&String::from_utf8_lossy(key), value) {
            Ok(e) => {
                self.skipped.remove(key);
                Some(e)
            }
            Err(why) => {
                if self.skipped.insert(key.to_vec()) {
                    log::warn!("skipping instance record: {why}");
                }
                None
            }
        }
    }
}

/// Follows `<prefix>/` in etcd until `stop` is cancelled, feeding every change to `sink`.
pub async fn watch_prefix(
    opts: EtcdOptions,
    tls: Option<Arc<Tls>>,
    prefix: String,
    sink: Arc<dyn ResolverSink>,
    stop: CancellationToken,
) {
    let key_prefix = format!("{prefix}/");
    let mut backoff = Backoff::new(Duration::from_millis(100), 1.6, 0.2, Duration::from_secs(5));
    let mut client: Option<Client> = None;
    let mut known = Known::default();
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow_once(&opts, tls.as_deref(), &key_prefix, &mut client, &mut known, &*sink, &mut backoff) => r,
        };
        match result {
            // The watch start revision was compacted away: list again right away.
            Err(WatchEnd::Compacted(why)) => {
                log::info!("etcd resolver for {prefix:?}: {why}; listing again");
                known.revision = None;
                sink.event(ResolverEvent::Resync);
                sink.event(ResolverEvent::WatchRestart);
                known.watching = false;
                continue;
            }
            Err(WatchEnd::Failed(e)) => {
                if std::mem::take(&mut known.watching) {
                    sink.event(ResolverEvent::WatchRestart);
                }
                log::warn!("etcd resolver for {prefix:?}: {e}; retrying");
                sink.error(e);
            }
            Ok(()) => {}
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Keys per page of the listing: a prefix can hold more than one response may carry.
const LIST_PAGE: i64 = 500;

/// The largest etcd response the resolver reads (etcd-client's default is 4 MiB; etcd allows
/// values of up to 1.5 MiB, so a page of large records needs more).
const MAX_ETCD_RESPONSE: usize = 64 << 20;

/// Lists `key_prefix` into `known.instances` page by page, every page at the revision of the
/// first; returns that revision.
async fn list(
    c: &Client,
    key_prefix: &str,
    request_timeout: Duration,
    known: &mut Known,
) -> Result<i64, String> {
    let mut kv = c.kv_client().max_decoding_message_size(MAX_ETCD_RESPONSE);
    let end = range_end(key_prefix.as_bytes());
    let mut from = key_prefix.as_bytes().to_vec();
    let mut revision = 0;
    known.instances.clear();
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LIST_PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let page = kv.get(from.clone(), Some(opts));
        let resp = within(&format!("etcd get {key_prefix:?}"), request_timeout, page).await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        for kv in resp.kvs() {
            if let Some(e) = known.decode(kv.key(), kv.value()) {
                known.instances.insert(kv.key().to_vec(), e);
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                // The next page starts just after the last key of this one.
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(revision),
        }
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix rule).
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

enum WatchEnd {
    Compacted(String),
    Failed(String),
}

impl From<String> for WatchEnd {
    fn from(e: String) -> Self {
        WatchEnd::Failed(e)
    }
}

/// One (list-then-)watch cycle. Returns when the watch ends, with the reason as the error.
async fn follow_once(
    opts: &EtcdOptions,
    tls: Option<&Tls>,
    key_prefix: &str,
    client: &mut Option<Client>,
    known: &mut Known,
    sink: &dyn ResolverSink,
    backoff: &mut Backoff,
) -> Result<(), WatchEnd> {
    if client.is_none() {
        *client = Some(connect(opts, tls).await?);
    }
    let c = client.as_mut().expect("connected above");
    let request_timeout = opts.dial_timeout.max(Duration::from_secs(1));
    let revision = match known.revision {
        Some(r) => r,
        None => {
            let revision = list(c, key_prefix, request_timeout, known).await?;
            known.revision = Some(revision);
            sink.update(dedup(&known.instances));
            revision
        }
    };

    let watch_opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1)
        .with_progress_notify();
    let mut watcher = c
        .watch_client()
        .max_decoding_message_size(MAX_ETCD_RESPONSE);
    let watch = watcher.watch(key_prefix, Some(watch_opts));
    let mut stream = within(
        &format!("etcd watch {key_prefix:?}"),
        request_timeout,
        watch,
    )
    .await?;
    // Changes reach the sink at most once per UPDATE_WINDOW: the first change after a quiet
    // period at once, the rest of a burst (10,000 instances registering) together at the end
    // of the window. Each update costs O(instances), so one per key would be O(instances^2).
    let mut last_update: Option<Instant> = None;
    let mut dirty = false;
    let end = loop {
        let next = if dirty {
            let due = last_update.map_or_else(Instant::now, |t| t + UPDATE_WINDOW);
            tokio::select! {
                m = stream.message() => Some(m),
                _ = tokio::time::sleep_until(due) => None,
            }
        } else {
            Some(stream.message().await)
        };
        let msg = match next {
            None => {
                sink.update(dedup(&known.instances));
                last_update = Some(Instant::now());
                dirty = false;
                continue;
            }
            Some(Ok(Some(msg))) => msg,
            Some(Ok(None)) => {
                break WatchEnd::Failed(format!("etcd watch {key_prefix:?}: stream ended"))
            }
            Some(Err(e)) => break WatchEnd::Failed(format!("etcd watch {key_prefix:?}: {e}")),
        };
        if msg.compact_revision() > 0 {
            break WatchEnd::Compacted(format!(
                "etcd watch {key_prefix:?} from revision {} was compacted (compact revision {})",
                known.revision.unwrap_or(0) + 1,
                msg.compact_revision()
            ));
        }
        if msg.canceled() {
            break WatchEnd::Failed(format!(
                "etcd watch {key_prefix:?} cancelled: {}",
                msg.cancel_reason()
            ));
        }
        if msg.created() {
            backoff.reset();
            known.watching = true;
        }
        let mut changed = false;
        for event in msg.events() {
            let Some(kv) = event.kv() else { continue };
            sink.event(match event.event_type() {
                EventType::Put => ResolverEvent::Put,
                EventType::Delete => ResolverEvent::Delete,
            });
            match event.event_type() {
                EventType::Put => match known.decode(kv.key(), kv.value()) {
                    Some(e) => {
                        changed |= known
                            .instances
                            .insert(kv.key().to_vec(), e.clone())
                            .as_ref()
                            != Some(&e)
                    }
                    None => changed |= known.instances.remove(kv.key()).is_some(),
                },
                EventType::Delete => {
                    known.skipped.remove(kv.key());
                    changed |= known.instances.remove(kv.key()).is_some()
                }
            }
            known.revision = Some(known.revision.unwrap_or(0).max(kv.mod_revision()));
        }
        if let Some(h) = msg.header() {
            // Progress notifications and events both move the watch's revision forward.
            if msg.events().is_empty() && !msg.created() {
                known.revision = Some(known.revision.unwrap_or(0).max(h.revision()));
            }
        }
        if changed || msg.created() {
            let now = Instant::now();
            if msg.created() || last_update.map_or(true, |t| now >= t + UPDATE_WINDOW) {
                sink.update(dedup(&known.instances));
                last_update = Some(now);
                dirty = false;
            } else {
                dirty = true;
            }
        }
    };
    // Whatever was held back for the window is not lost with the watch.
    if dirty {
        sink.update(dedup(&known.instances));
    }
    Err(end)
}

/// How long changes after an update wait to share the next one (see the watch loop).
const UPDATE_WINDOW: Duration = Duration::from_millis(5);

/// One endpoint per address (two keys may name the same address; the first key wins).
fn dedup(instances: &BTreeMap<Vec<u8>, Endpoint>) -> Vec<Endpoint> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(instances.len());
    instances
        .values()
        .filter(|e| seen.insert(e.addr.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_end_of_a_prefix() {
        assert_eq!(range_end(b"svc/"), b"svc0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff"), vec![0]);
    }

    #[test]
    fn an_invalid_record_is_skipped_and_remembered_until_it_is_fixed() {
        let mut known = Known::default();
        assert!(known.decode(b"svc/a", br#"{"Addr":"garbage"}"#).is_none());
        assert!(known.decode(b"svc/a", br#"{"Addr":"garbage"}"#).is_none());
        assert_eq!(known.skipped.len(), 1, "warned about once");
        let e = known
            .decode(b"svc/a", br#"{"Addr":"127.0.0.1:1"}"#)
            .unwrap();
        assert_eq!(e.addr, "127.0.0.1:1");
        assert!(known.skipped.is_empty());
    }
}
