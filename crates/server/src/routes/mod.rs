//! The handlers, by who calls them: `jobs` (producers and operators), `work` (workers), `queues`
//! (queues, listings, dead letters), `health`.

pub mod health;
pub mod jobs;
pub mod queues;
pub mod work;
