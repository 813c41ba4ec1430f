//! The recent events of this node, numbered, for `GET /v1/events`: a client that reconnects with the
//! last number it saw (`after=` or `Last-Event-ID`) misses nothing that is still kept.
//!
//! Filled by the engine's [`Observer`] hook, synchronously, so that no event is skipped; the most
//! recent [`EVENT_HISTORY`] are kept. Cursors are `BOOT.SEQ`: `BOOT` names this process's run, so a
//! cursor from before a restart is recognised as such instead of silently meaning other events.

use std::collections::VecDeque;
use std::sync::Mutex;

use errand_core::{Event, Observer};
use tokio::sync::watch;

/// Events kept for clients that resume (default 10,000; about 3 MB).
pub const EVENT_HISTORY: usize = 10_000;

/// This node's recent events.
#[derive(Debug)]
pub struct EventLog {
    boot: String,
    inner: Mutex<Ring>,
    latest: watch::Sender<u64>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ring {
    /// Events numbered `first..first + events.len()`.
    first: u64,
    events: VecDeque<Event>,
}

/// A client's cursor.
#[derive(Debug, PartialEq)]
pub enum Cursor {
    /// After event number `n` of this run.
    After(u64),
    /// From another run of the server (before a restart): what it names is gone.
    OtherRun,
}

/// Where a client stands after a read.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Events after the cursor, each with its number, and the number of the last event looked at
    /// (the cursor to read after next, whether or not the filter kept it).
    Events {
        events: Vec<(u64, Event)>,
        upto: u64,
    },
    /// The cursor is older than anything kept (or from another run): events were missed. Reading
    /// goes on from the oldest kept, numbered `from`.
    Missed { from: u64 },
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let boot = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        EventLog {
            boot,
            inner: Mutex::new(Ring {
                first: 1,
                events: VecDeque::new(),
            }),
            latest: watch::channel(0).0,
            capacity: capacity.max(1),
        }
    }

    /// The cursor of event `seq`.
    pub fn cursor(&self, seq: u64) -> String {
        format!("{}.{seq}", self.boot)
    }

    /// What a cursor stands for; `None` for text that is no cursor at all.
    pub fn parse_cursor(&self, cursor: &str) -> Option<Cursor> {
        let (boot, seq) = cursor.split_once('.')?;
        let seq: u64 = seq.parse().ok()?;
        Some(if boot == self.boot {
            Cursor::After(seq)
        } else {
            Cursor::OtherRun
        })
    }

    /// The number of the latest event (0: none yet).
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Wakes when a new event is kept.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Up to `limit` events numbered after `after` that `keep` accepts.
    pub fn read(&self, after: u64, limit: usize, keep: impl Fn(&Event) -> bool) -> Read {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let next = after.saturating_add(1);
        if next < ring.first {
            return Read::Missed { from: ring.first };
        }
        let skip = usize::try_from(next - ring.first).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut upto = (ring.first + ring.events.len() as u64)
            .saturating_sub(1)
            .max(after);
        for (i, e) in ring.events.iter().enumerate().skip(skip) {
            if !keep(e) {
                continue;
            }
            let seq = ring.first + i as u64;
            events.push((seq, e.clone()));
            if events.len() == limit {
                upto = seq;
                break;
            }
        }
        Read::Events { events, upto }
    }
}

impl Observer for EventLog {
    fn observe(&self, event: &Event) {
        let seq = {
            let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
                ring.first += 1;
            }
            ring.events.push_back(event.clone());
            ring.first + ring.events.len() as u64 - 1
        };
        self.latest.send_replace(seq);
    }
}

/// Several observers as one.
#[derive(Debug)]
pub struct Observers(pub Vec<std::sync::Arc<dyn Observer>>);

impl Observer for Observers {
    fn observe(&self, event: &Event) {
        for o in &self.0 {
            o.observe(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::{JobId, JobState};

    fn ev(queue: &str) -> Event {
        Event::new(
            "01JAAAAAAAAAAAAAAAAAAAAAAA"
                .parse::<JobId>()
                .expect("an id"),
            queue.into(),
            "k".into(),
            None,
            JobState::Waiting,
            0,
            0,
        )
    }

    fn seqs(r: Read) -> Vec<u64> {
        match r {
            Read::Events { events, .. } => events.into_iter().map(|(s, _)| s).collect(),
            Read::Missed { from } => vec![0, from],
        }
    }

    #[test]
    fn reads_resume_after_a_cursor_filter_and_say_when_events_were_dropped() {
        let log = EventLog::new(3);
        assert_eq!(seqs(log.read(0, 10, |_| true)), Vec::<u64>::new());
        for q in ["a", "b", "a"] {
            log.observe(&ev(q));
        }
        assert_eq!(log.latest(), 3);
        assert_eq!(seqs(log.read(0, 10, |_| true)), [1, 2, 3]);
        assert_eq!(seqs(log.read(1, 10, |e| e.queue == "a")), [3]);
        assert!(matches!(
            log.read(0, 10, |e| e.queue == "z"),
            Read::Events { upto: 3, .. }
        ));
        assert!(matches!(
            log.read(0, 1, |e| e.queue == "a"),
            Read::Events { upto: 1, .. }
        ));
        assert_eq!(seqs(log.read(0, 1, |_| true)), [1]);
        log.observe(&ev("b")); // 1 is dropped
        assert_eq!(
            seqs(log.read(0, 10, |_| true)),
            [0, 2],
            "missed; go on from 2"
        );
        assert_eq!(seqs(log.read(1, 10, |_| true)), [2, 3, 4]);
        assert_eq!(seqs(log.read(4, 10, |_| true)), Vec::<u64>::new());
    }

    #[test]
    fn cursors_name_their_run() {
        let log = EventLog::new(3);
        assert_eq!(log.parse_cursor(&log.cursor(7)), Some(Cursor::After(7)));
        assert_eq!(log.parse_cursor("0.7"), Some(Cursor::OtherRun));
        assert_eq!(log.parse_cursor("7"), None);
        assert_eq!(log.parse_cursor("x.y"), None);
    }
}
