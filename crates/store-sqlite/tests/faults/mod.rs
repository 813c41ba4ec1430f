//! A storage-fault layer for SQLite: a VFS wrapped around the real one, installed as the default in
//! this test binary, so that the store opens its files through it without knowing.
//!
//! It does two things to the database file and its WAL (other files pass through):
//! - it refuses chosen writes and syncs, as a failing disk would (`Mode`);
//! - it remembers every write and truncation since each file's last successful sync, so that
//!   `power_cut` can rebuild what a machine losing power may keep. Syncs are not passed to the disk:
//!   what counts as durable here is what the store asked to sync, which is what these tests judge; the
//!   kernel's part is not under test.
//!
//! **The crash model.** A change (a write or a truncation) is *durable* once a sync of its file
//! succeeds after it — unless a sync of that file failed first: after a failed fsync Linux does not say
//! what reached the disk and a later successful fsync does not write it again, so such a change stays
//! *undefined* for good. At a power cut every change not durable, undefined or merely unsynced, may
//! have reached the disk or not, independently of the others and in any order, and a write spanning
//! several sectors may be torn: some of its 512-byte or 4 KiB sectors (aligned in the file) written,
//! the others not. `Crash::states` picks crash states from that space: everything lost, everything
//! kept (what a crash of the process alone leaves), and seeded random subsets with torn writes.
//! Not modelled: directory entries (a file's creation and deletion are durable at once), other files
//! (a rollback journal passes through, every write durable at once), a sector written with garbage (a
//! write lands whole, not at all, or sector by sector), and reads after a failed sync (the cache keeps
//! the new data here).
//!
//! The state is global, as SQLite's VFS table is: tests using it must run one at a time (`exclusive`).

// A VFS is SQLite's C interface; there is no safe way to write one.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard, OnceLock};

use rusqlite::ffi;

/// Which writes and syncs fail. Calls are counted from 1 across the database and its WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing fails.
    Pass,
    /// The power goes off at call `at`: it and every later write, sync, truncate and delete are
    /// refused, so nothing after it reaches the disk.
    PowerCut { at: u64 },
    /// Call `at` fails with `code` (a sync with `SQLITE_IOERR_FSYNC`); the others pass.
    FailOnce { at: u64, code: c_int },
    /// Every call from `at` on fails with `code`, until the mode changes: a full disk until space is
    /// freed. With `SQLITE_FULL`, syncs still pass (what was written can be flushed).
    FailFrom { at: u64, code: c_int },
}

#[derive(Debug)]
struct State {
    mode: Mode,
    calls: u64,
    refused: u64,
    /// Per path, the changes not yet folded into what is durable, oldest first.
    unsynced: BTreeMap<String, Vec<Change>>,
}

/// What a power cut makes of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not synced yet: kept or lost at a cut.
    Pending,
    /// A sync of its file failed while it was pending: kept or lost, whatever later syncs do.
    Undefined,
    /// A sync succeeded after it (and none failed before): kept.
    Durable,
}

/// One write or truncation.
#[derive(Debug, Clone)]
struct Change {
    /// Where it starts: a write's offset, a truncation's new length.
    offset: u64,
    /// What the file held in `[offset, offset + new.len())` (a truncation: up to its old end) before.
    old: Vec<u8>,
    /// The bytes written; empty for a truncation.
    new: Vec<u8>,
    /// The file's length before.
    len_before: u64,
    truncate: bool,
    fate: Fate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Sync,
    Truncate,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: Mutex<State> = Mutex::new(State {
        mode: Mode::Pass,
        calls: 0,
        refused: 0,
        unsynced: BTreeMap::new(),
    });
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes the tests of this binary: the fault layer has one state.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

/// Starts a scenario: sets the mode and forgets earlier counts and changes.
pub fn arm(mode: Mode) {
    install();
    let mut s = state();
    s.mode = mode;
    s.calls = 0;
    s.refused = 0;
    s.unsynced.clear();
}

/// Changes the mode, keeping the counts (e.g. a full disk is freed).
pub fn set_mode(mode: Mode) {
    state().mode = mode;
}

/// Cuts the power now: every later write, sync, truncate and delete is refused. `power_cut` then puts
/// the files back once they are closed.
pub fn cut_now() {
    let mut s = state();
    s.mode = Mode::PowerCut { at: s.calls + 1 };
}

/// Writes and syncs seen since `arm`, and how many were refused.
pub fn calls() -> (u64, u64) {
    let s = state();
    (s.calls, s.refused)
}

/// Takes what the files hold and what may still change in a power cut, for `Crash::apply`. Call it
/// once nothing has the files open; the files themselves are left as they are.
pub fn power_cut() -> Crash {
    let changed = std::mem::take(&mut state().unsynced);
    let files = changed
        .into_iter()
        .filter_map(|(path, changes)| {
            let mut base = std::fs::read(&path).ok()?;
            // Undo every change, newest first: what the file held when the first was made.
            for c in changes.iter().rev() {
                let end = c.offset as usize + c.old.len();
                if base.len() < end {
                    base.resize(end, 0);
                }
                base[c.offset as usize..end].copy_from_slice(&c.old);
                base.resize(c.len_before as usize, 0);
            }
            Some(FileImage {
                path,
                base,
                changes,
            })
        })
        .collect();
    Crash { files }
}

/// A file at a power cut: what it held before its remembered changes, and those changes.
#[derive(Debug)]
struct FileImage {
    path: String,
    base: Vec<u8>,
    changes: Vec<Change>,
}

/// What the files may hold after a power cut.
#[derive(Debug)]
pub struct Crash {
    files: Vec<FileImage>,
}

/// One crash state: which of the changes not durable reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// None of them.
    LoseAll,
    /// All of them, whole: what a crash of the process alone leaves.
    KeepAll,
    /// Each kept whole, lost, or torn at sector boundaries, from a seeded generator.
    Random { seed: u64 },
}

impl Crash {
    /// Changes that a power cut may keep or lose.
    pub fn open_changes(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.changes)
            .filter(|c| c.fate != Fate::Durable)
            .count()
    }

    /// The crash states to try: everything lost, everything kept, and `random` seeded subsets (seeds
    /// from `seed`); a single one when no change is open.
    pub fn states(&self, random: u64, seed: u64) -> Vec<Pick> {
        if self.open_changes() == 0 {
            return vec![Pick::LoseAll];
        }
        let mut picks = vec![Pick::LoseAll, Pick::KeepAll];
        picks.extend((0..random).map(|k| Pick::Random {
            seed: mix(seed ^ mix(k + 1)),
        }));
        picks
    }

    /// Writes the files as they are in crash state `pick`: in `dir` under their own names, or where they
    /// were when `dir` is `None`. Returns how many writes it tore.
    pub fn apply(&self, pick: Pick, dir: Option<&std::path::Path>) -> std::io::Result<usize> {
        let mut rng = match pick {
            Pick::Random { seed } => seed | 1,
            _ => 1,
        };
        let mut torn = 0;
        for f in &self.files {
            let mut data = f.base.clone();
            for c in &f.changes {
                let open = c.fate != Fate::Durable;
                match pick {
                    _ if !open => apply_whole(&mut data, c),
                    Pick::LoseAll => {}
                    Pick::KeepAll => apply_whole(&mut data, c),
                    Pick::Random { .. } => match next(&mut rng) % 4 {
                        0 | 1 => {}
                        2 => apply_whole(&mut data, c),
                        _ => torn += usize::from(apply_torn(&mut data, c, &mut rng)),
                    },
                }
            }
            let target = match dir {
                Some(d) => d.join(std::path::Path::new(&f.path).file_name().unwrap()),
                None => std::path::PathBuf::from(&f.path),
            };
            std::fs::write(target, &data)?;
        }
        Ok(torn)
    }
}

fn apply_whole(data: &mut Vec<u8>, c: &Change) {
    if c.truncate {
        data.resize(c.offset as usize, 0);
        return;
    }
    // A write past the end extends the file (a hole reads as zeros); a write never shortens it, even
    // where an earlier truncation it followed was lost.
    let end = c.offset as usize + c.new.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[c.offset as usize..end].copy_from_slice(&c.new);
}

/// Writes some of `c`'s sectors (512 bytes or 4 KiB, aligned in the file) and not the others: at least
/// one of each when the write spans two or more. Returns whether it tore the write.
fn apply_torn(data: &mut Vec<u8>, c: &Change, rng: &mut u64) -> bool {
    let sector: u64 = if next(rng).is_multiple_of(2) {
        512
    } else {
        4096
    };
    let (start, end) = (c.offset, c.offset + c.new.len() as u64);
    let mut pieces = Vec::new();
    let mut at = start;
    while at < end {
        let to = ((at / sector + 1) * sector).min(end);
        pieces.push((at, to));
        at = to;
    }
    if c.truncate || pieces.len() < 2 {
        apply_whole(data, c);
        return false;
    }
    let n = pieces.len();
    let mut keep: Vec<bool> = (0..n).map(|_| next(rng).is_multiple_of(2)).collect();
    // Torn, not whole and not lost: one sector in, one out.
    let (i, j) = (
        (next(rng) % n as u64) as usize,
        (next(rng) % n as u64) as usize,
    );
    keep[i] = true;
    keep[if j == i { (i + 1) % n } else { j }] = false;
    for ((from, to), kept) in pieces.into_iter().zip(keep) {
        if kept {
            let (a, b) = ((from - start) as usize, (to - start) as usize);
            if data.len() < to as usize {
                data.resize(to as usize, 0);
            }
            data[from as usize..to as usize].copy_from_slice(&c.new[a..b]);
        }
    }
    true
}

/// SplitMix64's finalizer: spreads a seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64: enough randomness to pick crash states, and the same picks from the same seed.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Whether call number `n` fails, and with what.
fn refuse(s: &mut State, op: Op) -> Option<c_int> {
    s.calls += 1;
    let n = s.calls;
    let io = match op {
        Op::Write => ffi::SQLITE_IOERR_WRITE,
        Op::Sync => ffi::SQLITE_IOERR_FSYNC,
        Op::Truncate => ffi::SQLITE_IOERR_TRUNCATE,
    };
    let code = match s.mode {
        Mode::Pass => None,
        Mode::PowerCut { at } => (n >= at).then_some(io),
        Mode::FailOnce { at, code } => (n == at).then_some(code),
        Mode::FailFrom { at, code } => (n >= at).then_some(code),
    };
    let code = match code {
        Some(ffi::SQLITE_FULL) if op == Op::Sync => None,
        Some(c) if op != Op::Write && c != ffi::SQLITE_FULL => Some(io),
        other => other,
    };
    if code.is_some() {
        s.refused += 1;
    }
    code
}

fn power_is_off(s: &State) -> bool {
    matches!(s.mode, Mode::PowerCut { at } if s.calls >= at)
}

// The file object SQLite allocates for us (`szOsFile` bytes): our header, then the real VFS's file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The database or its WAL, by path; `None` for files this layer leaves alone.
    path: *mut String,
    real: *mut ffi::sqlite3_file,
}

struct RealVfs(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer is to SQLite's own VFS object, which lives for the whole process and is safe
// to use from any thread.
unsafe impl Send for RealVfs {}
unsafe impl Sync for RealVfs {}

static REAL: OnceLock<RealVfs> = OnceLock::new();

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL.get().map_or(std::ptr::null_mut(), |r| r.0)
}

/// Installs the layer as SQLite's default VFS (once per process).
pub fn install() {
    REAL.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find initializes SQLite and returns its default VFS, which is never
        // freed; the wrapper is leaked so that it outlives every connection.
        unsafe {
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!real.is_null(), "SQLite has no default VFS");
            let mut ours = *real;
            ours.szOsFile = (std::mem::size_of::<File>() + (*real).szOsFile as usize) as c_int;
            ours.zName = c"errand-faults".as_ptr();
            ours.pNext = std::ptr::null_mut();
            ours.xOpen = Some(x_open);
            ours.xDelete = Some(x_delete);
            let ours = Box::into_raw(Box::new(ours));
            let rc = ffi::sqlite3_vfs_register(ours, 1);
            assert_eq!(rc, ffi::SQLITE_OK, "register the fault layer");
            RealVfs(real)
        }
    });
}

unsafe fn real_of(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: every file handed to our methods was opened by `x_open`, which filled the header in.
    unsafe {
        let real = (*(file as *mut File)).real;
        (real, &*(*real).pMethods)
    }
}

unsafe fn path_of(file: *mut ffi::sqlite3_file) -> Option<&'static String> {
    // SAFETY: as in `real_of`; the path lives until `x_close`.
    unsafe { (*(file as *mut File)).path.as_ref() }
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives us `szOsFile` bytes at `file`; the real file lives after our header.
    unsafe {
        let real = (file as *mut u8).add(std::mem::size_of::<File>()) as *mut ffi::sqlite3_file;
        let vfs = real_vfs();
        let rc = ((*vfs).xOpen.expect("xOpen"))(vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // No methods: SQLite will not call xClose on a file that failed to open.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        let tracked = flags & (ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_WAL) != 0;
        let path = if tracked && !name.is_null() {
            Box::into_raw(Box::new(
                CStr::from_ptr(name).to_string_lossy().into_owned(),
            ))
        } else {
            std::ptr::null_mut()
        };
        std::ptr::write(
            file as *mut File,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                path,
                real,
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: SQLite passes a valid path.
    unsafe {
        let mut s = state();
        if power_is_off(&s) {
            return ffi::SQLITE_IOERR_DELETE;
        }
        if !name.is_null() {
            s.unsynced
                .remove(CStr::from_ptr(name).to_string_lossy().as_ref());
        }
        let vfs = real_vfs();
        ((*vfs).xDelete.expect("xDelete"))(vfs, name, sync_dir)
    }
}

/// The file's current length, through the real file.
unsafe fn size_of(real: *mut ffi::sqlite3_file, m: &ffi::sqlite3_io_methods) -> Option<u64> {
    let mut size: ffi::sqlite3_int64 = 0;
    // SAFETY: `real` is an open file of the real VFS.
    let rc = unsafe { (m.xFileSize.expect("xFileSize"))(real, &mut size) };
    (rc == ffi::SQLITE_OK).then_some(size as u64)
}

/// Reads `[from, to)` through the real file.
unsafe fn read(
    real: *mut ffi::sqlite3_file,
    m: &ffi::sqlite3_io_methods,
    from: u64,
    to: u64,
) -> Vec<u8> {
    let mut buf = vec![0u8; (to - from) as usize];
    if !buf.is_empty() {
        // SAFETY: `buf` holds the bytes asked for.
        unsafe {
            (m.xRead.expect("xRead"))(
                real,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                from as ffi::sqlite3_int64,
            );
        }
    }
    buf
}

/// Notes a change to the file at `path` before it is made: a write of `new` at `offset`, or (with
/// `truncate_to`) a truncation.
unsafe fn remember(
    s: &mut State,
    path: &str,
    real: *mut ffi::sqlite3_file,
    m: &ffi::sqlite3_io_methods,
    offset: u64,
    new: &[u8],
    truncate_to: Option<u64>,
) {
    // SAFETY: as in `read`.
    unsafe {
        let len = size_of(real, m).unwrap_or(0);
        let (offset, to, new) = match truncate_to {
            Some(at) => (at, len.max(at), Vec::new()),
            None => (offset, offset + new.len() as u64, new.to_vec()),
        };
        let old = if offset < len {
            read(real, m, offset, to.min(len))
        } else {
            Vec::new()
        };
        s.unsynced
            .entry(path.to_string())
            .or_default()
            .push(Change {
                offset,
                old,
                new,
                len_before: len,
                truncate: truncate_to.is_some(),
                fate: Fate::Pending,
            });
    }
}

/// A sync of `path` ended: on success its pending changes are durable, and those before the first
/// undefined one are forgotten (the file itself holds them); on failure they are undefined for good.
fn synced(s: &mut State, path: &str, ok: bool) {
    let Some(changes) = s.unsynced.get_mut(path) else {
        return;
    };
    for c in changes.iter_mut().filter(|c| c.fate == Fate::Pending) {
        c.fate = if ok { Fate::Durable } else { Fate::Undefined };
    }
    let settled = changes
        .iter()
        .take_while(|c| c.fate == Fate::Durable)
        .count();
    changes.drain(..settled);
    if changes.is_empty() {
        s.unsynced.remove(path);
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: the header was written by `x_open`; the path box is freed once, here.
    unsafe {
        let (real, m) = real_of(file);
        let f = file as *mut File;
        if !(*f).path.is_null() {
            drop(Box::from_raw((*f).path));
            (*f).path = std::ptr::null_mut();
        }
        (m.xClose.expect("xClose"))(real)
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: passed through.
    unsafe {
        let (real, m) = real_of(file);
        (m.xRead.expect("xRead"))(real, buf, amt, off)
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: passed through, after noting what it overwrites.
    unsafe {
        let (real, m) = real_of(file);
        if let Some(path) = path_of(file) {
            // Held across the write, so that a change and its record are one step.
            let mut s = state();
            if let Some(code) = refuse(&mut s, Op::Write) {
                return code;
            }
            let bytes = std::slice::from_raw_parts(buf as *const u8, amt as usize);
            remember(&mut s, path, real, m, off as u64, bytes, None);
            return (m.xWrite.expect("xWrite"))(real, buf, amt, off);
        }
        (m.xWrite.expect("xWrite"))(real, buf, amt, off)
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: passed through, after noting what it cuts off.
    unsafe {
        let (real, m) = real_of(file);
        if let Some(path) = path_of(file) {
            let mut s = state();
            if let Some(code) = refuse(&mut s, Op::Truncate) {
                return code;
            }
            remember(&mut s, path, real, m, 0, &[], Some(size as u64));
            return (m.xTruncate.expect("xTruncate"))(real, size);
        }
        (m.xTruncate.expect("xTruncate"))(real, size)
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: passed through for untracked files.
    unsafe {
        let (real, m) = real_of(file);
        if let Some(path) = path_of(file) {
            let mut s = state();
            if let Some(code) = refuse(&mut s, Op::Sync) {
                // After a failed fsync, what was written before it is not known to be anywhere.
                synced(&mut s, path, false);
                return code;
            }
            // Durable from here on; the disk itself is not asked (see the module's comment).
            synced(&mut s, path, true);
            return ffi::SQLITE_OK;
        }
        (m.xSync.expect("xSync"))(real, flags)
    }
}

macro_rules! pass {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: passed through to the real file.
            unsafe {
                let (real, m) = real_of(file);
                (m.$field.expect(stringify!($field)))(real $(, $arg)*)
            }
        }
    };
}

pass!(x_file_size, xFileSize, (size: *mut ffi::sqlite3_int64) -> c_int);
pass!(x_lock, xLock, (level: c_int) -> c_int);
pass!(x_unlock, xUnlock, (level: c_int) -> c_int);
pass!(x_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int);
pass!(x_file_control, xFileControl, (op: c_int, arg: *mut c_void) -> c_int);
pass!(x_sector_size, xSectorSize, () -> c_int);
pass!(x_device_characteristics, xDeviceCharacteristics, () -> c_int);
pass!(x_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
pass!(x_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int);
pass!(x_shm_unmap, xShmUnmap, (delete: c_int) -> c_int);

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: passed through.
    unsafe {
        let (real, m) = real_of(file);
        (m.xShmBarrier.expect("xShmBarrier"))(real)
    }
}

// Version 2: the shared-memory methods WAL needs, and no memory-mapped I/O (whose writes would bypass
// xWrite).
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};
