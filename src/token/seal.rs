//! Tokens encrypted at rest: AES-256-GCM over the access and refresh tokens, in both stores.
//!
//! A sealed value is `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag), with the token's key and the
//! field name as associated data, so a sealed value cannot be moved to another token or field.
//! Everything else in a record (expiry, scope, version) stays readable. Plain values written
//! before a key was configured are read as they are and sealed on their next write.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::store::StoreError;
use super::{Token, TokenKey};
use crate::config::StoreKey;
use crate::secret::Secret;

const PREFIX: &str = "enc:v1:";

/// The key that seals and opens tokens.
pub struct Sealer(LessSafeKey);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(...)")
    }
}

impl Sealer {
    /// The sealer of `key`.
    pub(crate) fn new(key: &StoreKey) -> Sealer {
        // Any 32 bytes are an AES-256 key.
        let key = UnboundKey::new(&AES_256_GCM, key.bytes()).unwrap_or_else(|_| unreachable!("32-byte key"));
        Sealer(LessSafeKey::new(key))
    }

    pub(crate) fn seal(&self, aad: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let mut buf = plain.as_bytes().to_vec();
        // Sealing in place cannot fail for inputs of this size.
        let _ =
            self.0.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub(crate) fn open(&self, aad: &str, sealed: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

fn aad(key: &TokenKey, field: &str) -> String {
    format!("{}\u{1f}{}\u{1f}{}\u{1f}{field}", key.app, key.integration, key.account)
}

/// The record as it is written: secrets sealed when there is a key.
pub(crate) fn seal_token(sealer: Option<&Sealer>, key: &TokenKey, t: &Token) -> Token {
    let Some(s) = sealer else { return t.clone() };
    let mut out = t.clone();
    out.access_token = Secret::new(s.seal(&aad(key, "access_token"), t.access_token.expose()));
    out.refresh_token = t.refresh_token.as_ref().map(|r| Secret::new(s.seal(&aad(key, "refresh_token"), r.expose())));
    out
}

/// The record as it was read: sealed secrets opened. A sealed value without a key, or one the
/// key cannot open, is an error (never a silently dropped token).
pub(crate) fn open_token(
    sealer: Option<&Sealer>,
    key: &TokenKey,
    mut t: Token,
    place: &str,
) -> Result<Token, StoreError> {
    let open = |field: &str, v: &Secret| -> Result<Secret, StoreError> {
        if !v.expose().starts_with(PREFIX) {
            return Ok(v.clone());
        }
        let Some(s) = sealer else {
            return Err(StoreError::Key(format!(
                "{place}: the tokens are encrypted: set store.encryption_key to the key they were written with"
            )));
        };
        s.open(&aad(key, field), v.expose()).map(Secret::new).ok_or_else(|| {
            StoreError::Key(format!("{place}: store.encryption_key does not open the stored tokens (a different key?)"))
        })
    };
    t.access_token = open("access_token", &t.access_token)?;
    t.refresh_token = t.refresh_token.as_ref().map(|r| open("refresh_token", r)).transpose()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            refresh_token: Some(Secret::new("rt")),
            expires_at: Some(5),
            version: 3,
            ..Token::new(Secret::new("at"))
        }
    }

    #[test]
    fn seal_open_and_refuse() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let s = Sealer::new(&StoreKey::from_base64(&key).unwrap());
        let k = TokenKey::new("a", "i", "default");
        let sealed = seal_token(Some(&s), &k, &token());
        assert!(sealed.access_token.expose().starts_with(PREFIX));
        // (Not `!contains("rt")`: random base64 holds "rt" now and then.)
        assert!(sealed.refresh_token.as_ref().unwrap().expose().starts_with(PREFIX));
        assert_eq!(sealed.version, 3, "metadata stays readable");
        assert_eq!(open_token(Some(&s), &k, sealed.clone(), "t").unwrap(), token());
        // Another key, another token's place, or no key at all: an error, not a lost token.
        let other =
            Sealer::new(&StoreKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap());
        assert!(matches!(open_token(Some(&other), &k, sealed.clone(), "t"), Err(StoreError::Key(_))));
        assert!(open_token(Some(&s), &TokenKey::new("a", "i", "other"), sealed.clone(), "t").is_err());
        assert!(open_token(None, &k, sealed, "t").is_err());
        // Plain records (written before a key was set) are read as they are.
        assert_eq!(open_token(Some(&s), &k, token(), "t").unwrap(), token());
        assert!(StoreKey::from_base64("c2hvcnQ=").is_err());
        assert!(StoreKey::from_base64("not base64!").is_err());
    }
}
