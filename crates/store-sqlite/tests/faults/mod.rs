//! A storage-fault layer for SQLite: a VFS wrapped around the real one, installed as the default in
//! this test binary, so that the store opens its files through it without knowing.
//!
//! It does two things to the database file and its WAL (other files pass through):
//! - it refuses chosen writes and syncs, as a failing disk would (`Mode`);
//! - it remembers what each write changed since the file was last synced, so that `power_cut` can put
//!   every file back to what it held at its last sync — what a machine losing power keeps. Syncs are
//!   not passed to the disk: what counts as durable here is what the store asked to sync, which is what
//!   these tests judge; the kernel's part is not under test.
//!
//! The state is global, as SQLite's VFS table is: tests using it must run one at a time (`exclusive`).

// A VFS is SQLite's C interface; there is no safe way to write one.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::os::unix::fs::FileExt;
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
    /// Per path, the changes since its last sync.
    unsynced: BTreeMap<String, Unsynced>,
}

#[derive(Debug)]
struct Unsynced {
    /// The file's length at its last sync.
    synced_len: u64,
    /// What each change overwrote, oldest first.
    undo: Vec<(u64, Vec<u8>)>,
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

/// Puts every file back to what it held at its last sync, as a power cut would. Call it once nothing
/// has the files open.
pub fn power_cut() -> std::io::Result<()> {
    let files = std::mem::take(&mut state().unsynced);
    for (path, u) in files {
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (offset, old) in u.undo.iter().rev() {
            file.write_all_at(old, *offset)?;
        }
        file.set_len(u.synced_len)?;
    }
    Ok(())
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

/// Notes what a change to `[from, to)` of the file at `path` overwrites, before it is made.
unsafe fn remember(
    s: &mut State,
    path: &str,
    real: *mut ffi::sqlite3_file,
    m: &ffi::sqlite3_io_methods,
    from: u64,
    to: u64,
) {
    // SAFETY: as in `read`.
    unsafe {
        let len = size_of(real, m).unwrap_or(0);
        let u = s.unsynced.entry(path.to_string()).or_insert(Unsynced {
            synced_len: len,
            undo: Vec::new(),
        });
        if from < len {
            u.undo.push((from, read(real, m, from, to.min(len))));
        }
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
            remember(&mut s, path, real, m, off as u64, off as u64 + amt as u64);
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
            let len = size_of(real, m).unwrap_or(0);
            remember(&mut s, path, real, m, size as u64, len);
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
                return code;
            }
            // Durable from here on; the disk itself is not asked (see the module's comment).
            s.unsynced.remove(path.as_str());
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
