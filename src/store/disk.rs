//! The free-space watermark of the data directory. Ingest checks it before writing,
//! so the store never runs the disk full: below the watermark new events are refused
//! with 503 (the provider retries later) while reads and deliveries go on, and
//! ingest resumes by itself once space is freed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::domain::now_ms;

/// How long one reading of the free space is trusted.
const RECHECK_MS: i64 = 500;

#[derive(Clone)]
pub struct DiskGuard {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// 0 turns the guard off.
    min_free_bytes: u64,
    /// Last reading, in bytes, and when it was taken (ms).
    free_bytes: AtomicU64,
    checked_at: AtomicI64,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                min_free_bytes,
                free_bytes: AtomicU64::new(u64::MAX),
                checked_at: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Whether there is room for new events. A failed reading counts as room: the
    /// store's own errors still stop a write that cannot be made durable.
    pub fn has_room(&self) -> bool {
        let inner = &self.inner;
        if inner.min_free_bytes == 0 {
            return true;
        }
        let now = now_ms();
        if now.saturating_sub(inner.checked_at.load(Ordering::Relaxed)) >= RECHECK_MS {
            match free_bytes(&inner.dir) {
                Ok(free) => inner.free_bytes.store(free, Ordering::Relaxed),
                Err(error) => {
                    tracing::warn!(dir = %inner.dir.display(), %error, "could not read the free disk space");
                    inner.free_bytes.store(u64::MAX, Ordering::Relaxed);
                }
            }
            inner.checked_at.store(now, Ordering::Relaxed);
        }
        inner.free_bytes.load(Ordering::Relaxed) >= inner.min_free_bytes
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.inner.min_free_bytes
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a properly sized, writable struct.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &std::path::Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_above_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskGuard::new(dir.path().to_owned(), 0).has_room());
        assert!(DiskGuard::new(dir.path().to_owned(), 1).has_room());
        assert!(!DiskGuard::new(dir.path().to_owned(), u64::MAX).has_room());
    }
}
