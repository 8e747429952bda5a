//! The installation values saved through `/custom_configs` (SPEC 8), kept beside the token store
//! in `settings.json`, sealed like tokens (AES-256-GCM): with `store.encryption_key` when one is
//! configured, else with a key generated on first save beside it (`settings.key`, mode 0600), so
//! that client secrets and secure parameters are never written in the clear. Never in the app
//! folder's own files.

use std::path::{Path, PathBuf};

use super::seal::Sealer;
use crate::config::{Saved, Source, StoreKey};

const FILE: &str = "settings.json";
const KEY_FILE: &str = "settings.key";
/// What the seal is bound to: a sealed value cannot be moved into a token's field.
const AAD: &str = "bearerd installation settings";

/// The saved values of a configuration's source.
pub struct Settings {
    dir: PathBuf,
    key: Option<StoreKey>,
}

impl Settings {
    /// The settings of `source` (where they live, and the key that seals them).
    pub fn of(source: &Source) -> Settings {
        let (dir, key) = crate::config::state_of(source);
        Settings { dir, key }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The sealing key: the configured one, or the generated one (made when `create`).
    fn sealer(&self, create: bool) -> Result<Option<Sealer>, String> {
        if let Some(k) = &self.key {
            return Ok(Some(Sealer::new(k)));
        }
        let path = self.dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => StoreKey::from_base64(&text)
                .map(|k| Some(Sealer::new(&k)))
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                use base64::Engine as _;
                let mut bytes = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| "no randomness for a key".to_string())?;
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                create_dir(&self.dir)?;
                crate::secret::write_atomic(&path, text.as_bytes(), 0o600)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                StoreKey::from_base64(&text).map(|k| Some(Sealer::new(&k)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// What was saved (nothing when nothing was).
    pub fn read(&self) -> Result<Saved, String> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let shown = path.display();
        let outer: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{shown}: not JSON: {e}"))?;
        let sealed =
            outer.get("sealed").and_then(|v| v.as_str()).ok_or_else(|| format!("{shown}: no sealed values"))?;
        let sealer = self.sealer(false)?.ok_or_else(|| format!("{shown}: its key ({KEY_FILE}) is missing"))?;
        let plain = sealer.open(AAD, sealed).ok_or_else(|| format!("{shown}: cannot be opened with its key"))?;
        serde_json::from_str(&plain).map_err(|e| format!("{shown}: {e}"))
    }

    /// Saves `saved`, replacing what was (atomically, mode 0600).
    pub fn write(&self, saved: &Saved) -> Result<(), String> {
        let sealer = self.sealer(true)?.ok_or("no key")?;
        let plain = serde_json::to_string(saved).map_err(|e| e.to_string())?;
        let out = serde_json::json!({"version": 1, "sealed": sealer.seal(AAD, &plain)});
        create_dir(&self.dir)?;
        let path = self.path();
        crate::secret::write_atomic(&path, out.to_string().as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    crate::secret::create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_values_are_sealed_and_read_back() {
        let dir = std::env::temp_dir().join(format!("bearerd-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings { dir: dir.clone(), key: None };
        assert_eq!(settings.read().unwrap(), Saved::default(), "nothing saved yet");
        let mut saved = Saved::default();
        saved
            .apps
            .entry("demo".into())
            .or_default()
            .clients
            .entry("github".into())
            .or_default()
            .insert("client_secret".into(), "s3cret-value".into());
        settings.write(&saved).unwrap();
        let on_disk = std::fs::read_to_string(settings.path()).unwrap();
        assert!(!on_disk.contains("s3cret-value") && !on_disk.contains("github"), "{on_disk}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(settings.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(settings.read().unwrap(), saved);
        // Another key cannot open it.
        let other = Settings {
            dir: dir.clone(),
            key: Some(StoreKey::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap()),
        };
        assert!(other.read().unwrap_err().contains("cannot be opened"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
