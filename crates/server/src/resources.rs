//! What the server takes from its machine, read when asked (a scrape, an alert pass): the store's
//! footprint (`Store::footprint`), the free space of the filesystem holding the embedded store, and
//! the process's resident memory. Each is `errand_*` on `/metrics` and feeds the `disk_full` and
//! `store_growth` alerts.

use std::path::{Path, PathBuf};

use errand_core::Engine;
use errand_core::store::StoreObject;

/// One reading.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub store: Vec<StoreObject>,
    /// The filesystem under the data directory (the embedded store only: PostgreSQL's disk is the
    /// database server's).
    pub disk: Option<Disk>,
    /// Resident memory of this process, in bytes (Linux; `None` elsewhere).
    pub resident_bytes: Option<u64>,
}

/// A filesystem's space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Free for an unprivileged user.
    pub free: u64,
    /// Taken by files.
    pub used: u64,
    pub total: u64,
}

impl Disk {
    /// How full the filesystem is, in percent, as `df` says it: of the space a user may have (the
    /// blocks reserved for root count neither as used nor as free).
    pub fn used_percent(&self) -> f64 {
        let usable = self.used.saturating_add(self.free);
        if usable == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / usable as f64
    }
}

impl Resources {
    /// Every part of the store, together.
    pub fn store_bytes(&self) -> u64 {
        self.store.iter().map(|o| o.bytes).sum()
    }
}

/// Reads the resources now. A part that cannot be read is left out (and logged), so that one
/// failing reading never hides the others.
pub async fn read(engine: &Engine, data_dir: Option<&Path>) -> Resources {
    let store = engine.footprint().await.unwrap_or_else(|e| {
        tracing::warn!("cannot read the store's footprint: {e}");
        Vec::new()
    });
    let disk = data_dir.and_then(|d| match disk(d) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(dir = %d.display(), "cannot read the free space: {e}");
            None
        }
    });
    Resources {
        store,
        disk,
        resident_bytes: resident_bytes(),
    }
}

/// The free space of the filesystem holding `dir`, as an unprivileged user may use it.
pub fn disk(dir: &Path) -> std::io::Result<Disk> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(Disk {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        used: s
            .f_blocks
            .saturating_sub(s.f_bfree)
            .saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// `VmRSS` of `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The directory whose filesystem holds the embedded store at `db`.
pub fn data_dir_of(db: &Path) -> PathBuf {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_free_space_and_memory_of_this_machine_read_sensibly() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path()).unwrap();
        assert!(d.total > 0 && d.free <= d.total, "{d:?}");
        assert!((0.0..=100.0).contains(&d.used_percent()));
        if cfg!(target_os = "linux") {
            // At least a mebibyte: a running test process with its runtime.
            assert!(resident_bytes().unwrap() > 1 << 20);
        }
        assert_eq!(data_dir_of(Path::new("errand.db")), PathBuf::from("."));
        assert_eq!(data_dir_of(Path::new("/a/b.db")), PathBuf::from("/a"));
    }
}
