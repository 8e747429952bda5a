//! A string that must never be printed: tokens, client secrets, admin tokens; and the one way
//! secrets are written to disk ([`write_atomic`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A secret value. `Debug` and `Display` print `"..."`; only [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret text. Call it only where the value is sent to its rightful recipient.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    pub fn constant_time_eq(&self, other: &[u8]) -> bool {
        ct_eq(self.0.as_bytes(), other)
    }
}

/// Whether `a` and `b` are equal, in time independent of where they first differ (their
/// lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Eight bytes at a time, every one of them looked at: no early exit.
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    let word = |c: &[u8]| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    let mut diff = wa.zip(wb).fold(0u64, |acc, (x, y)| acc | (word(x) ^ word(y)));
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"...\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("...")
    }
}

/// Creates `dir` and any missing parents as 0700 (a folder that holds secrets); one that exists
/// is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `bytes` to `path` with permissions `mode` (0600 for a secret) so that a crash at any
/// point leaves either the old or the new file: a temporary file, fsync, rename, fsync the folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "\"...\" ...");
        assert!(s.constant_time_eq(b"hunter2"));
        assert!(!s.constant_time_eq(b"hunter3"));
        assert!(!s.constant_time_eq(b"hunter"));
        let long = b"0123456789abcdefghij";
        assert!(ct_eq(long, long) && ct_eq(b"", b""));
        for i in 0..long.len() {
            let mut other = *long;
            other[i] ^= 1;
            assert!(!ct_eq(long, &other), "a difference at {i}");
        }
    }
}
