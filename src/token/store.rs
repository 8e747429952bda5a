//! Where tokens live between restarts. [`TokenStore`] is the trait a shared store (Redis) will
//! implement too; [`FileStore`] is the embedded default: one JSON file, replaced atomically
//! (write a temporary file, fsync, rename, fsync the folder), mode 0600.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::{Token, TokenKey};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("token store {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "token store {path} is not a valid token file: {message} (fix or move it away; bearerd will not overwrite it)"
    )]
    Corrupt { path: String, message: String },
    #[error("token {0} was changed concurrently")]
    Conflict(String),
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Key(String),
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    Done,
    /// The stored version was not the expected one; nothing was written.
    Conflict,
    /// The version was the expected one but the lease given was no longer held (it ran out, or
    /// another process took it); nothing was written.
    Fenced,
}

/// The right to refresh one token, across every process that shares the store.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: TokenKey,
    /// Random, so only the holder can renew or release it.
    pub owner: String,
}

/// What the store holds for a key.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The version of the last write, 0 when none. In a shared store a removal is a write too
    /// (it leaves the version behind), so the version of a key only grows (SPEC 5.8).
    pub version: u64,
    /// The token; `None` when there is none (never written, or removed).
    pub token: Option<Token>,
}

/// Whether a write reached a replica of the store (SPEC 5.8: a rotated refresh token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// The store has no replicas (or is not replicated at all).
    NoReplicas,
    Acknowledged,
    /// No replica acknowledged in time: the write lives on the primary only.
    NotAcknowledged,
}

/// A change another process made to the store.
#[derive(Debug, Clone)]
pub enum Change {
    Key(TokenKey),
    /// Anything may have changed (a reconnect after missed notifications, perhaps to a Redis
    /// that lost writes): everything is read again, and what this process holds newer than the
    /// store is written back.
    All,
}

/// Durable storage of tokens. The embedded [`FileStore`] serves one process; a shared store
/// (Redis) serves several replicas and adds leases and change notifications.
pub trait TokenStore: Send + Sync + 'static {
    /// Every stored token.
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(TokenKey, Token)>, StoreError>>;

    /// What the store holds for `key`, read from the store itself.
    fn get<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Stored, StoreError>>;

    /// Writes `new` for `key` (removes it when `None`) only if the stored token's version is
    /// `expected` (0: no token stored) and, when `lease` is given, the lease is still held
    /// (fencing). Durable when it returns `Done`.
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a TokenKey,
        expected: u64,
        new: Option<Token>,
        lease: Option<&'a Lease>,
    ) -> BoxFuture<'a, Result<Cas, StoreError>>;

    /// Takes the refresh lease of `key`; `None` while another process holds it.
    fn lease<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Option<Lease>, StoreError>> {
        Box::pin(async move { Ok(Some(Lease { key: key.clone(), owner: String::new() })) })
    }

    /// Extends a held lease; false when it was lost.
    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// Gives a lease back (only its owner can).
    fn release<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Waits (briefly) until the latest write of `key` reached a replica of the store.
    fn replicated<'a>(&'a self, _key: &'a TokenKey) -> BoxFuture<'a, Replication> {
        Box::pin(async { Replication::NoReplicas })
    }

    /// Tells the other processes that `key` changed.
    fn publish<'a>(&'a self, _key: &'a TokenKey) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Changes other processes made; `None` for a store no other process uses.
    fn changes(&self) -> Option<tokio::sync::mpsc::Receiver<Change>> {
        None
    }
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    format: u32,
    tokens: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: TokenKey,
    #[serde(flatten)]
    token: Token,
}

/// The embedded token store: one JSON file.
pub struct FileStore {
    path: PathBuf,
    /// Plain tokens in memory; sealed on the way to the file when there is a key.
    tokens: tokio::sync::Mutex<BTreeMap<TokenKey, Token>>,
    sealer: Option<std::sync::Arc<super::seal::Sealer>>,
}

impl FileStore {
    /// Opens (or prepares to create) the file. A file that exists but cannot be parsed is an
    /// error: it may hold the only copy of a refresh token.
    pub fn open(path: &Path, sealer: Option<std::sync::Arc<super::seal::Sealer>>) -> Result<FileStore, StoreError> {
        let io = |source| StoreError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            crate::secret::create_private_dir(dir).map_err(io)?;
        }
        remove_stale_temporaries(path);
        let tokens = match std::fs::read(path) {
            Ok(bytes) => {
                let meta = std::fs::metadata(path).map_err(io)?;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "token file was readable by others; setting mode 0600");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                let f: FileFormat = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
                let place = path.display().to_string();
                f.tokens
                    .into_iter()
                    .map(|e| super::seal::open_token(sealer.as_deref(), &e.key, e.token, &place).map(|t| (e.key, t)))
                    .collect::<Result<_, _>>()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(FileStore { path: path.to_path_buf(), tokens: tokio::sync::Mutex::new(tokens), sealer })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes temporary files a crash left behind (never the token file itself).
fn remove_stale_temporaries(path: &Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let prefix = format!(".{name}.tmp-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl TokenStore for FileStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(TokenKey, Token)>, StoreError>> {
        Box::pin(async move { Ok(self.tokens.lock().await.iter().map(|(k, t)| (k.clone(), t.clone())).collect()) })
    }

    fn get<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            let token = self.tokens.lock().await.get(key).cloned();
            Ok(Stored { version: token.as_ref().map_or(0, |t| t.version), token })
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a TokenKey,
        expected: u64,
        new: Option<Token>,
        _lease: Option<&'a Lease>,
    ) -> BoxFuture<'a, Result<Cas, StoreError>> {
        Box::pin(async move {
            let mut tokens = self.tokens.lock().await;
            if tokens.get(key).map_or(0, |t| t.version) != expected {
                return Ok(Cas::Conflict);
            }
            let mut next = tokens.clone();
            match new {
                Some(t) => next.insert(key.clone(), t),
                None => next.remove(key),
            };
            let file = FileFormat {
                format: 1,
                tokens: next
                    .iter()
                    .map(|(k, t)| Entry {
                        key: k.clone(),
                        token: super::seal::seal_token(self.sealer.as_deref(), k, t),
                    })
                    .collect(),
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Io {
                path: self.path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || crate::secret::write_atomic(&path, &bytes, 0o600))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|source| StoreError::Io { path: self.path.display().to_string(), source })?;
            *tokens = next;
            Ok(Cas::Done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn token(s: &str, version: u64) -> Token {
        Token { refresh_token: Some(Secret::new("r")), expires_at: Some(10), version, ..Token::new(Secret::new(s)) }
    }

    #[tokio::test]
    async fn round_trip_cas_and_mode() {
        let dir = std::env::temp_dir().join(format!("bearerd-store-{}", std::process::id()));
        let path = dir.join("sub/tokens.json");
        let _ = std::fs::remove_dir_all(&dir);
        let s = FileStore::open(&path, None).unwrap();
        let k = TokenKey::new("a", "i", "default");
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("t1", 1)), None).await.unwrap(), Cas::Done);
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("t2", 1)), None).await.unwrap(), Cas::Conflict);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = FileStore::open(&path, None).unwrap();
        let all = again.load_all().await.unwrap();
        assert_eq!(all, vec![(k.clone(), token("t1", 1))]);
        assert_eq!(again.compare_and_swap(&k, 1, None, None).await.unwrap(), Cas::Done);
        assert!(FileStore::open(&path, None).unwrap().load_all().await.unwrap().is_empty());
        std::fs::write(&path, b"{half").unwrap();
        assert!(matches!(FileStore::open(&path, None), Err(StoreError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
