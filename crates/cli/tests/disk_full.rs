//! A full disk, for real: `errand serve` on a 4 MiB tmpfs. Once the store cannot write, every write is
//! answered 503 `unavailable` with `Retry-After`, quickly; reads still work; when space is freed (the
//! tmpfs is grown) writes work again, and after a SIGKILL and a restart every acknowledged job is there.
//!
//! Mounting needs root, which `scripts/test` (the README's test command, and CI's) has on the machines it
//! sets up: a failed mount fails the test, since a skipped test would pass without running.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Running, free_port, serve, wait_ready};

use errand_client::protocol::EnqueueJob;
use errand_client::{Client, RetryPolicy};
use serde_json::json;

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` at `at`, or says why it could not.
    fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "grow the tmpfs");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn job(n: usize) -> EnqueueJob {
    // Random-looking text, so that nothing compresses it away: 32 KiB a job.
    let pad: String = (0..4096)
        .map(|i| format!("{:08x}", (i * 2654435761usize + n) % 0xffff_ffff))
        .collect();
    EnqueueJob::new("k", json!({ "n": n, "pad": pad }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_quickly_and_loses_nothing_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("small");
    let mount = Mount::tmpfs(&data, "4m").unwrap_or_else(|e| {
        panic!(
            "cannot mount a tmpfs ({e}): this test needs root (`mount -t tmpfs`); run the tests as \
             root, as CI does"
        )
    });
    let port = free_port();
    // Declared after the mount, so dropped (killed) before the tmpfs is unmounted.
    let server = Running(serve(&data, port));
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    wait_ready(&client).await;

    // Fill the disk.
    let mut acknowledged = Vec::new();
    let mut refusals = 0;
    for n in 0.. {
        assert!(n < 1_000, "4 MiB never filled up");
        let started = Instant::now();
        match client.enqueue("full", &job(n)).await {
            Ok(e) => acknowledged.push(e.id),
            Err(e) => {
                assert_eq!(e.status(), Some(503), "{e}");
                assert_eq!(e.code(), Some("unavailable"), "{e}");
                let errand_client::Error::Api { retry_after, .. } = &e else {
                    unreachable!()
                };
                assert!(retry_after.is_some(), "{e}");
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{e} took {:?}",
                    started.elapsed()
                );
                refusals += 1;
                if refusals == 5 {
                    break;
                }
            }
        }
    }
    assert!(!acknowledged.is_empty());
    // Reads still work on a full disk.
    client.get(&acknowledged[0]).await.unwrap();

    // Space is freed: writes work again.
    mount.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.enqueue("full", &job(10_000)).await {
            Ok(e) => {
                acknowledged.push(e.id);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "writes did not resume: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 10_001..10_010 {
        acknowledged.push(client.enqueue("full", &job(n)).await.unwrap().id);
    }

    // Nothing acknowledged is lost, across a kill and a restart.
    drop(server);
    let server = Running(serve(&data, port));
    wait_ready(&client).await;
    for id in &acknowledged {
        client
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged job {id} lost: {e}"));
    }
    let q = client.queue("full").await.unwrap();
    assert_eq!(q.counts.waiting, acknowledged.len() as u64);
    drop(server);
    eprintln!(
        "{} jobs acknowledged around a full disk, {refusals} refused with 503",
        acknowledged.len()
    );
}
