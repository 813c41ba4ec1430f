//! Wake-ups from other nodes: a dedicated connection that `LISTEN`s on the schema's channel.
//!
//! Every transaction that makes jobs due sends `pg_notify('<schema>_due', queue)` (see [`crate::ops`]).
//! This task receives those notifications — from every node, this one included — and forwards the queue
//! names on a broadcast channel, which [`PgStore::subscribe_due`](errand_core::Store::subscribe_due)
//! hands to the server so that it wakes the fetches long-polling those queues.
//!
//! The connection is not from the pool: a pooled connection would stop listening when it went back to
//! the pool. If it drops (the server restarted, the network broke), the task reconnects with backoff and
//! then sends [`ANY_QUEUE`](crate::ANY_QUEUE), because notifications sent while nobody listened are
//! lost: any queue may have due jobs now.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::conn::{describe, quote_ident};

/// Queue names buffered per subscriber; one that falls further behind is told it lagged (and the server
/// then wakes every fetch).
const CAPACITY: usize = 1_024;
/// How often the listening connection is checked: a connection that died without a word (a cut network)
/// would otherwise be noticed only by TCP, many minutes later.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The listening task and the channel it feeds. Dropping it stops the task and closes its connection.
#[derive(Debug)]
pub(crate) struct Listener {
    due: broadcast::Sender<String>,
    task: AbortHandle,
}

impl Listener {
    /// Connects, `LISTEN`s on `channel` and starts the task. Returns once the first `LISTEN` is in
    /// place, so that no notification sent after this returns is missed.
    pub(crate) async fn start(
        config: Config,
        channel: String,
    ) -> Result<Listener, tokio_postgres::Error> {
        let (due, _) = broadcast::channel(CAPACITY);
        let first = Session::open(&config, &channel, &due).await?;
        let task = tokio::spawn(keep_listening(config, channel, due.clone(), first)).abort_handle();
        Ok(Listener { due, task })
    }

    /// A new receiver of the queue names.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.due.subscribe()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_listening(
    config: Config,
    channel: String,
    due: broadcast::Sender<String>,
    mut session: Session,
) {
    loop {
        session.until_lost().await;
        tracing::warn!(
            channel,
            "lost the PostgreSQL connection listening for due jobs; reconnecting"
        );
        let mut backoff = BACKOFF_MIN;
        session = loop {
            tokio::time::sleep(backoff).await;
            match Session::open(&config, &channel, &due).await {
                Ok(s) => break s,
                Err(e) => {
                    let retry_in_ms = backoff.as_millis() as u64;
                    tracing::warn!(
                        channel,
                        error = %describe(&e),
                        retry_in_ms,
                        "cannot listen for due jobs"
                    );
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        tracing::info!(channel, "listening for due jobs again");
        // Whatever was notified while nobody listened is lost: every queue may have due jobs.
        let _ = due.send(crate::ANY_QUEUE.to_string());
    }
}

/// One listening connection: the client (kept, or the connection closes) and the task reading the
/// connection's messages.
struct Session {
    client: Client,
    reader: JoinHandle<()>,
}

impl Session {
    async fn open(
        config: &Config,
        channel: &str,
        due: &broadcast::Sender<String>,
    ) -> Result<Session, tokio_postgres::Error> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let tx = due.clone();
        // The connection must be polled for anything to happen on it, the LISTEN below included; its
        // asynchronous messages are the notifications.
        let reader = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        // No receiver (no server following the store yet) is not an error.
                        let _ = tx.send(n.payload().to_string());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %describe(&e), "the listening connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        let session = Session { client, reader };
        session
            .client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await?;
        Ok(session)
    }

    /// Waits until the connection is gone: closed by the server or the network, or silent to a ping.
    async fn until_lost(&mut self) {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = &mut self.reader => return,
                _ = ping.tick() => {
                    let ping = self.client.simple_query("SELECT 1");
                    if !matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
