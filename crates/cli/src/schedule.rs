//! `errand schedule`: cron schedules over the HTTP API.

use std::process::ExitCode;

use clap::Subcommand;
use errand_protocol::{Missed, ScheduleDef, ScheduleView};

use crate::Remote;
use crate::commands::{client, report};
use crate::output::{fail, in_zone, json, say, table};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules with their next tick, in each schedule's zone.
    #[command(visible_alias = "list")]
    Ls,
    /// One schedule, with its next five ticks.
    Get { name: String },
    /// Create or replace a schedule.
    Set {
        name: String,
        /// 5 fields (min hour dom month dow), 6 with seconds first, or @hourly, @daily...
        #[arg(long)]
        cron: String,
        /// The queue its jobs go to.
        #[arg(long)]
        queue: String,
        /// The kind of its jobs.
        #[arg(long)]
        kind: String,
        /// The payload of its jobs, as JSON.
        #[arg(long, value_name = "JSON", default_value = "null")]
        payload: String,
        /// An IANA time zone: ticks follow its wall clock, DST included.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Ticks missed while no server ran: skip them, or fire one job for them all.
        #[arg(long, value_enum, default_value_t = MissedArg::Skip)]
        missed: MissedArg,
    },
    /// Delete a schedule (its jobs stay).
    #[command(visible_alias = "delete")]
    Rm { name: String },
    /// Fire no ticks until resumed.
    Pause { name: String },
    /// Fire again from the next tick after now.
    Resume { name: String },
    /// Enqueue the schedule's job now.
    Trigger { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MissedArg {
    Skip,
    CatchUpOne,
}

pub async fn schedule(cmd: ScheduleCommand, remote: &Remote) -> ExitCode {
    let c = match client(remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let show = |s: ScheduleView, what: &str| {
        if remote.json {
            return json(&s);
        }
        say!("{} {what}", s.name);
        print_schedule(&s);
        ExitCode::SUCCESS
    };
    let res = match cmd {
        ScheduleCommand::Ls => c.schedules().await.map(|l| {
            if remote.json {
                return json(&l);
            }
            let rows: Vec<Vec<String>> = l
                .schedules
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.def.cron.clone(),
                        s.def.timezone.clone(),
                        s.def.queue.clone(),
                        s.def.kind.clone(),
                        if s.paused { "paused" } else { "running" }.into(),
                        s.next_runs
                            .first()
                            .map(|t| in_zone(*t, &s.def.timezone))
                            .unwrap_or_default(),
                        s.last_run_at
                            .map(|t| in_zone(t, &s.def.timezone))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME", "CRON", "ZONE", "QUEUE", "KIND", "STATUS", "NEXT RUN", "LAST RUN",
                ],
                &rows,
            );
            ExitCode::SUCCESS
        }),
        ScheduleCommand::Get { name } => c.schedule(&name).await.map(|s| {
            if remote.json {
                return json(&s);
            }
            print_schedule(&s);
            ExitCode::SUCCESS
        }),
        ScheduleCommand::Set {
            name,
            cron,
            queue,
            kind,
            payload,
            tz,
            missed,
        } => {
            let payload = match serde_json::from_str(&payload) {
                Ok(p) => p,
                Err(e) => return fail(2, &format!("--payload is not JSON: {e}")),
            };
            let mut def = ScheduleDef::new(cron, queue, kind, payload);
            def.timezone = tz;
            def.missed = match missed {
                MissedArg::Skip => Missed::Skip,
                MissedArg::CatchUpOne => Missed::CatchUpOne,
            };
            c.put_schedule(&name, &def).await.map(|s| show(s, "set"))
        }
        ScheduleCommand::Rm { name } => c.delete_schedule(&name).await.map(|s| {
            if remote.json {
                return json(&s);
            }
            say!("{} deleted", s.name);
            ExitCode::SUCCESS
        }),
        ScheduleCommand::Pause { name } => c.pause_schedule(&name).await.map(|s| show(s, "paused")),
        ScheduleCommand::Resume { name } => {
            c.resume_schedule(&name).await.map(|s| show(s, "resumed"))
        }
        ScheduleCommand::Trigger { name } => c.trigger_schedule(&name).await.map(|e| {
            if remote.json {
                return json(&e);
            }
            say!("{}", e.id);
            ExitCode::SUCCESS
        }),
    };
    res.unwrap_or_else(report)
}

fn print_schedule(s: &ScheduleView) {
    let rows = [
        ("cron", format!("{} ({})", s.def.cron, s.def.timezone)),
        ("job", format!("{} on {}", s.def.kind, s.def.queue)),
        ("status", if s.paused { "paused" } else { "running" }.into()),
        (
            "missed ticks",
            match s.def.missed {
                Missed::Skip => "skip",
                Missed::CatchUpOne => "catch up one",
            }
            .into(),
        ),
        (
            "last run",
            s.last_run_at
                .map(|t| in_zone(t, &s.def.timezone))
                .unwrap_or_else(|| "never".into()),
        ),
    ];
    for (k, v) in rows {
        say!("{k:<16} {v}");
    }
    for t in &s.next_runs {
        say!("{:<16} {}", "next run", in_zone(*t, &s.def.timezone));
    }
}
