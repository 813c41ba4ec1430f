//! The handlers, by who calls them: `jobs` (producers and operators), `work` (workers), `queues`
//! (queues, listings, dead letters), `schedules` (cron), `health`.

pub mod flows;
pub mod health;
pub mod jobs;
pub mod queues;
pub mod schedules;
pub mod work;
