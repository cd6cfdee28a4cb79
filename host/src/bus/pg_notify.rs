//! PostgreSQL `LISTEN`/`NOTIFY` between replicas sharing one database: every
//! local [`LogHead::bump`] is sent as `NOTIFY vigil_log, '<seq>'`, and every
//! notification from another replica is fed to [`LogHead::observe`], so live
//! followers on any replica wake promptly. Notifications are only wake-ups:
//! followers always read the log itself, and the live hub also re-reads the
//! log every second, so a lost notification (a dropped connection, a restart)
//! delays a follower by at most that second and never loses an event.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{mpsc, watch};

use super::LogHead;

/// The channel name every replica listens on.
pub const CHANNEL: &str = "vigil_log";

/// Starts the notifier and the listener; both stop with `stop`.
pub fn spawn(
    url: String,
    head: Arc<LogHead>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    head.forward_to(tx);
    vec![
        tokio::spawn(notify_loop(url.clone(), rx, stop.clone())),
        tokio::spawn(listen_loop(url, head, stop)),
    ]
}

/// Sends the newest local head as a notification; bumps that arrive while
/// one is being sent are folded into the next.
async fn notify_loop(
    url: String,
    mut rx: mpsc::UnboundedReceiver<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let pool = match PgPoolOptions::new().max_connections(1).connect_lazy(&url) {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!(error = %e, "log notifications disabled: bad database URL");
            return;
        }
    };
    loop {
        let mut seq = tokio::select! {
            next = rx.recv() => match next { Some(s) => s, None => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        while let Ok(later) = rx.try_recv() {
            seq = seq.max(later);
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(seq.to_string())
            .execute(&pool)
            .await
        {
            // Other replicas still see the event within a second (their hub re-reads the log).
            tracing::warn!(error = %e, seq, "sending a log notification failed");
        }
    }
}

async fn listen_loop(url: String, head: Arc<LogHead>, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for log notifications; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::debug!(channel = CHANNEL, "listening for log notifications");
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            match next {
                Ok(Some(n)) => {
                    if let Ok(seq) = n.payload().parse::<i64>() {
                        head.observe(seq);
                    }
                }
                // The connection dropped; the next try_recv reconnects and
                // re-issues LISTEN. Whatever was missed, the hub's own
                // re-read of the log finds.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "log notifications interrupted; reconnecting");
                    break;
                }
            }
        }
    }
}
