//! Live following of the event log, for the provenance streams.
//!
//! One [`LiveHub`] per replica reads new events from the store when the
//! [`LogHead`] moves (and once a second regardless, which covers a lost
//! PostgreSQL notification) and broadcasts them to every subscriber through
//! one shared, bounded ring (`tokio::sync::broadcast`). A subscriber's
//! [`Follower`] first pages through the stored history after its cursor
//! (store reads of a bounded size), then joins the ring and filters what
//! arrives in memory. Memory per subscriber is bounded: the ring is shared,
//! a history page holds at most about [`PAGE_BYTES`] (at least one event),
//! and an event larger than [`INLINE_BYTES`] is not kept in the ring but read
//! from the store by each subscriber that reaches it. A subscriber that
//! falls more than the ring's capacity behind (a burst) catches up from the
//! stored log and joins the ring again; one that has not caught up with the
//! live log for longer than `--stream-slow-after` is cut: its follower ends
//! with [`FollowItem::Cut`] saying why, and the client resumes from the last
//! id it received. Nobody waits for a slow subscriber: the hub never blocks
//! on a send.
//!
//! Does not own HTTP (see `api::streams`) nor event rendering (that is
//! [`StoredEvent::to_json`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::LogHead;
use crate::events::StoredEvent;
use crate::store::{EventQuery, Store, StoreError};

/// Events read from the store per hub read.
const HUB_PAGE: u32 = 1_000;
/// Rendered events larger than this are not kept in the shared ring.
pub const INLINE_BYTES: usize = 16 * 1024;
/// A history page aims at holding about this many bytes of rendered events.
pub const PAGE_BYTES: usize = 1024 * 1024;
/// First and largest history page, in events.
const FIRST_PAGE: u32 = 16;
const MAX_PAGE: u32 = 500;
/// How often the hub re-reads the log without a wake-up.
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// The event attributes the provenance streams filter on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub execution_id: Option<String>,
    pub source_id: Option<String>,
    pub project_module: Option<String>,
}

impl Scope {
    /// The string values of the scope attributes of an event (other JSON
    /// types do not match, as in the store's query).
    pub fn of(event: &StoredEvent) -> Scope {
        Scope {
            execution_id: event.execution_id.clone(),
            source_id: event.source_id.clone(),
            project_module: event.project_module.clone(),
        }
    }
}

/// Whether `event` passes the filters of `q` (everything but its cursor and
/// limit): the in-memory twin of the store's event query, used on live events.
pub fn matches(q: &EventQuery, event: &StoredEvent, scope: &Scope) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref() == Some(w.as_str()))
    };
    (q.event_types.is_empty() || q.event_types.contains(&event.event_type))
        && eq(&q.session_id, &event.session_id)
        && eq(&q.workflow_id, &event.workflow_id)
        && eq(&q.task_id, &event.task_id)
        && q.start.is_none_or(|s| event.event_ts >= s)
        && q.end.is_none_or(|e| event.event_ts < e)
        && eq(&q.execution_id, &scope.execution_id)
        && eq(&q.source_id, &scope.source_id)
        && eq(&q.project_module, &scope.project_module)
}

/// An event as the ring carries it.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: i64,
    /// The event, its scope and its rendering; `None` when the rendering is
    /// larger than [`INLINE_BYTES`] (subscribers read it from the store).
    inline: Option<(StoredEvent, Scope, Arc<str>)>,
}

impl LiveEvent {
    fn new(event: StoredEvent) -> LiveEvent {
        let json = event.to_json().to_string();
        let seq = event.seq;
        let inline = (json.len() <= INLINE_BYTES).then(|| {
            let scope = Scope::of(&event);
            (event, scope, Arc::from(json))
        });
        LiveEvent { seq, inline }
    }
}

/// Shared by every follower of this replica.
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// The hub's read position; taken by [`LiveHub::subscribe`] so a
    /// subscriber never joins while the hub skips ahead (see `run`).
    position: parking_lot::Mutex<i64>,
    subscribers: AtomicI64,
    capacity: usize,
    slow_after: Duration,
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("position", &*self.position.lock())
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl LiveHub {
    /// A hub whose ring holds `capacity` events; a follower that has not
    /// caught up with the live log for `slow_after` is cut; followers end
    /// when `stop` turns true.
    pub fn new(capacity: usize, slow_after: Duration, stop: watch::Receiver<bool>) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            tx: broadcast::channel(capacity.max(1)).0,
            position: parking_lot::Mutex::new(0),
            subscribers: AtomicI64::new(0),
            capacity: capacity.max(1),
            slow_after,
            stopping: stop,
        })
    }

    /// Live subscribers (open streams) on this replica.
    pub fn subscribers(&self) -> i64 {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        let _position = self.position.lock();
        self.tx.subscribe()
    }

    /// Reads new events after every head move (and every second) and
    /// broadcasts them, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        head: Arc<LogHead>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut wake = head.subscribe();
        *self.position.lock() = head.current();
        loop {
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(REREAD_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            {
                // Nobody listens: skip ahead instead of reading. Under the
                // lock, so a subscriber joins either before (and the hub
                // reads) or after (and its own history read covers
                // everything up to the head).
                let mut position = self.position.lock();
                if self.tx.receiver_count() == 0 {
                    *position = (*position).max(head.current());
                    continue;
                }
            }
            let mut position = *self.position.lock();
            loop {
                let page = store
                    .list_events(&EventQuery {
                        after_seq: position,
                        limit: HUB_PAGE,
                        ..EventQuery::default()
                    })
                    .await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "live hub could not read the log; retrying");
                        break;
                    }
                };
                let full = page.len() == HUB_PAGE as usize;
                for event in page {
                    position = event.seq;
                    let _ = self.tx.send(Arc::new(LiveEvent::new(event)));
                }
                *self.position.lock() = position;
                if !full {
                    break;
                }
            }
        }
    }
}

/// Counts an open stream while it lives.
struct SubscriberGuard(Arc<LiveHub>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a follower produces next.
#[derive(Debug)]
pub enum FollowItem {
    /// An event in log order: its seq and its JSON rendering.
    Event(i64, Arc<str>),
    /// The stream ends here; the reason, for the client. `code` is
    /// `slow_subscriber` or `shutting_down`.
    Cut { code: &'static str, message: String },
}

enum Mode {
    /// Paging through the stored log; `joined` once the history read came
    /// up short and the follower joined the ring.
    History {
        joined: Option<broadcast::Receiver<Arc<LiveEvent>>>,
    },
    Live(broadcast::Receiver<Arc<LiveEvent>>),
    Done,
}

/// One subscriber: stored history after its cursor, then live events, each
/// exactly once and in log order.
pub struct Follower {
    store: Arc<dyn Store>,
    hub: Arc<LiveHub>,
    query: EventQuery,
    /// Highest seq read or seen (history reads continue after it; live
    /// events at or below it were already sent).
    scanned: i64,
    page_limit: u32,
    pending: VecDeque<(i64, Arc<str>)>,
    mode: Mode,
    /// When it last had nothing left to receive from the ring (`None`
    /// until it first went live: reading old history is never "slow").
    caught_up_at: Option<tokio::time::Instant>,
    stopping: watch::Receiver<bool>,
    _guard: SubscriberGuard,
}

impl Follower {
    /// Follows the events matching `query` after `query.after_seq`.
    pub fn new(store: Arc<dyn Store>, hub: Arc<LiveHub>, query: EventQuery) -> Follower {
        hub.subscribers.fetch_add(1, Ordering::Relaxed);
        Follower {
            store,
            scanned: query.after_seq,
            query,
            page_limit: FIRST_PAGE,
            pending: VecDeque::new(),
            mode: Mode::History { joined: None },
            caught_up_at: None,
            stopping: hub.stopping.clone(),
            _guard: SubscriberGuard(hub.clone()),
            hub,
        }
    }

    /// Reads one history page after `scanned`; returns how many events it held.
    async fn read_page(&mut self) -> Result<(usize, bool), StoreError> {
        let limit = self.page_limit;
        let page = self
            .store
            .list_events(&EventQuery {
                after_seq: self.scanned,
                limit,
                ..self.query.clone()
            })
            .await?;
        let n = page.len();
        let mut bytes = 0usize;
        for e in page {
            self.scanned = e.seq;
            let json: Arc<str> = Arc::from(e.to_json().to_string());
            bytes += json.len();
            self.pending.push_back((e.seq, json));
        }
        // Aim the next page at PAGE_BYTES, by this page's mean size.
        if let Some(mean) = bytes.checked_div(n) {
            self.page_limit = ((PAGE_BYTES / mean.max(1)) as u32).clamp(1, MAX_PAGE);
        }
        Ok((n, n == limit as usize))
    }

    /// An event too large for the ring, read back through the store's query.
    async fn read_one(&mut self, seq: i64) -> Result<(), StoreError> {
        let page = self
            .store
            .list_events(&EventQuery {
                after_seq: seq - 1,
                limit: 1,
                ..self.query.clone()
            })
            .await?;
        if let Some(e) = page.into_iter().next().filter(|e| e.seq == seq) {
            self.pending
                .push_back((e.seq, Arc::from(e.to_json().to_string())));
        }
        Ok(())
    }

    /// Whether it has been behind the live log for longer than allowed.
    fn behind_too_long(&self) -> bool {
        self.caught_up_at
            .is_some_and(|at| at.elapsed() > self.hub.slow_after)
    }

    fn cut(&mut self) -> FollowItem {
        self.mode = Mode::Done;
        FollowItem::Cut {
            code: "slow_subscriber",
            message: format!(
                "this subscriber has not kept up with the live log for more than {} ms \
                 (more than the {} events the server keeps for live subscribers arrived \
                 while it read); reconnect with Last-Event-ID to resume from the stored log",
                self.hub.slow_after.as_millis(),
                self.hub.capacity
            ),
        }
    }

    /// The next item; `None` after a cut.
    pub async fn next(&mut self) -> Result<Option<FollowItem>, StoreError> {
        loop {
            if let Some((seq, json)) = self.pending.pop_front() {
                return Ok(Some(FollowItem::Event(seq, json)));
            }
            if *self.stopping.borrow() {
                self.mode = Mode::Done;
                return Ok(Some(FollowItem::Cut {
                    code: "shutting_down",
                    message: "the server is shutting down; reconnect with Last-Event-ID to resume"
                        .into(),
                }));
            }
            match std::mem::replace(&mut self.mode, Mode::Done) {
                Mode::Done => return Ok(None),
                Mode::History { joined } => {
                    let (n, full) = match self.read_page().await {
                        Ok(r) => r,
                        Err(e) => {
                            self.mode = Mode::History { joined };
                            return Err(e);
                        }
                    };
                    if full && self.behind_too_long() {
                        return Ok(Some(self.cut()));
                    }
                    self.mode = match (full, joined) {
                        (true, joined) => Mode::History { joined },
                        // Caught up: join the ring, then read once more for
                        // what was committed before joining.
                        (false, None) => Mode::History {
                            joined: Some(self.hub.subscribe()),
                        },
                        (false, Some(rx)) if n == 0 => Mode::Live(rx),
                        (false, Some(rx)) => Mode::History { joined: Some(rx) },
                    };
                }
                Mode::Live(mut rx) => {
                    let waiting = rx.is_empty();
                    if waiting {
                        self.caught_up_at = Some(tokio::time::Instant::now());
                    }
                    let received = tokio::select! {
                        r = rx.recv() => r,
                        _ = self.stopping.wait_for(|s| *s) => continue,
                    };
                    match received {
                        Ok(live) => {
                            if waiting {
                                // Up to the moment this arrived, nothing was pending.
                                self.caught_up_at = Some(tokio::time::Instant::now());
                            }
                            self.mode = Mode::Live(rx);
                            if live.seq <= self.scanned {
                                continue;
                            }
                            self.scanned = live.seq;
                            match &live.inline {
                                Some((event, scope, json)) => {
                                    if matches(&self.query, event, scope) {
                                        self.pending.push_back((live.seq, json.clone()));
                                    }
                                }
                                None => self.read_one(live.seq).await?,
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            if self.behind_too_long() {
                                return Ok(Some(self.cut()));
                            }
                            // A burst larger than the ring: catch up from
                            // the stored log, then join the ring again.
                            self.mode = Mode::History { joined: None };
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Ok(Some(FollowItem::Cut {
                                code: "shutting_down",
                                message:
                                    "the live log closed; reconnect with Last-Event-ID to resume"
                                        .into(),
                            }));
                        }
                    }
                }
            }
        }
    }
}
