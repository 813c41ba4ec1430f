//! Group commit: concurrent requests of one kind share a transaction.
//!
//! Every PostgreSQL transaction costs a few round trips and one WAL flush, and every one that notifies
//! takes the server's notification-queue lock at commit, which serializes such commits across the
//! whole database. Thirty-two producers each enqueuing one job would pay all of that thirty-two times.
//! A [`Group`] instead queues the requests; a dispatcher hands whatever has queued up to one transaction
//! (at most [`MAX_ITEMS`] items), with at most [`IN_FLIGHT`] such transactions running at a time, and
//! splits the answers back. Under light load a request goes alone and waits for nobody; under heavy load
//! requests wait for a free transaction and then share it.
//!
//! Only operations whose items are independent of each other are grouped, and the operation itself
//! must give the same answers for the merged list as for its parts run one after another (as
//! `job_insert` does: a unique key is resolved against every earlier job of the batch).
//!
//! If the database refuses a shared transaction (and so rolled it back), each request runs again on its
//! own, so that one request's error never becomes another's. If the connection failed instead, perhaps
//! during the commit, every request is told so, as it would have been on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use errand_core::{Error, Result};

use crate::conn::{TxOp, write};
use crate::sql::Cx;

/// Transactions of one group running at once; the requests that arrive meanwhile go into the next
/// one. More would only contend for the same locks and cores: with 32 producers on 2 cores, 1 and 2
/// gave the same enqueue rate and 4 gave a sixth less (`errand bench enqueue-single`); 2 keeps a
/// commit's flush from idling the next group on a larger machine.
pub(crate) const IN_FLIGHT: usize = 2;

/// The most items one shared transaction takes (a request larger than this still goes whole).
pub(crate) const MAX_ITEMS: usize = 5_000;

struct Pending<I, O> {
    items: Vec<I>,
    reply: oneshot::Sender<Result<Vec<O>>>,
}

/// A queue of requests of one operation, each a list of items answered item by item.
pub(crate) struct Group<I, O> {
    tx: mpsc::UnboundedSender<Pending<I, O>>,
    counters: Arc<Counters>,
}

/// What a group has committed: transactions, and the requests they answered with success.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) requests: AtomicU64,
}

impl Counters {
    fn committed(&self, requests: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

impl<I, O> Group<I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    /// Starts the dispatcher on the current Tokio runtime. It stops when the group is dropped.
    ///
    /// `op` must answer exactly one output per input item, in order.
    pub(crate) fn start(pool: Pool, cx: Arc<Cx>, op: TxOp<Cx, Vec<I>, Vec<O>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(dispatch(rx, pool, cx, op, counters.clone()));
        Group { tx, counters }
    }

    /// What this group has committed so far.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs `items` in the next shared transaction and answers once it committed.
    pub(crate) async fn run(&self, items: Vec<I>) -> Result<Vec<O>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { items, reply })
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the store's writer stopped".into()))?
    }
}

async fn dispatch<I, O>(
    mut rx: mpsc::UnboundedReceiver<Pending<I, O>>,
    pool: Pool,
    cx: Arc<Cx>,
    op: TxOp<Cx, Vec<I>, Vec<O>>,
    counters: Arc<Counters>,
) where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A request taken from the queue that did not fit into the previous transaction.
    let mut carried: Option<Pending<I, O>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // While every slot is busy, requests pile up in the queue: the next transaction takes them all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut items = batch[0].items.len();
        while items < MAX_ITEMS {
            match rx.try_recv() {
                Ok(p) if items + p.items.len() <= MAX_ITEMS => {
                    items += p.items.len();
                    batch.push(p);
                }
                Ok(p) => {
                    carried = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let (pool, cx, counters) = (pool.clone(), cx.clone(), counters.clone());
        tokio::spawn(async move {
            commit(&pool, &cx, op, batch, &counters).await;
            drop(slot);
        });
    }
}

/// Runs a batch of requests in one transaction and answers each; if that fails, runs each alone.
async fn commit<I, O>(
    pool: &Pool,
    cx: &Cx,
    op: TxOp<Cx, Vec<I>, Vec<O>>,
    batch: Vec<Pending<I, O>>,
    counters: &Counters,
) where
    I: Send + Sync,
    O: Send,
{
    if batch.len() == 1 {
        let p = batch.into_iter().next().expect("one request");
        let out = write(pool, cx, &p.items, op).await;
        if out.is_ok() {
            counters.committed(1);
        }
        let _ = p.reply.send(out);
        return;
    }
    let sizes: Vec<usize> = batch.iter().map(|p| p.items.len()).collect();
    let (items, replies): (Vec<Vec<I>>, Vec<_>) =
        batch.into_iter().map(|p| (p.items, p.reply)).unzip();
    let merged: Vec<I> = items.into_iter().flatten().collect();
    match write(pool, cx, &merged, op).await {
        Ok(outs) if outs.len() == merged.len() => {
            counters.committed(replies.len());
            let mut outs = outs.into_iter();
            for (reply, n) in replies.into_iter().zip(sizes) {
                let _ = reply.send(Ok(outs.by_ref().take(n).collect()));
            }
        }
        Ok(outs) => {
            // A broken operation, not a database problem: say so to everyone rather than guess.
            let message = format!(
                "store operation answered {} items for {} (a bug in Errand)",
                outs.len(),
                merged.len()
            );
            for reply in replies {
                let _ = reply.send(Err(Error::Backend(message.clone().into())));
            }
        }
        // The connection failed, perhaps during the commit: whether the transaction committed is unknown,
        // so nothing runs again; every request hears what its own transaction would have said.
        Err(Error::Unavailable(m)) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(m.clone())));
            }
        }
        // The database refused something and rolled everything back: find out whose it was.
        Err(e) => {
            tracing::debug!("a shared transaction failed ({e}); running its requests one by one");
            let mut merged = merged.into_iter();
            for (reply, n) in replies.into_iter().zip(sizes) {
                let own: Vec<I> = merged.by_ref().take(n).collect();
                let out = write(pool, cx, &own, op).await;
                if out.is_ok() {
                    counters.committed(1);
                }
                let _ = reply.send(out);
            }
        }
    }
}
