//! Public JWKs and JWK sets (RFC 7517) for verification: RSA (`n`, `e`), EC P-256 (`x`, `y`)
//! and OKP Ed25519 (`x`). Keys of other types or curves, and keys whose `use` is not `sig`, are
//! skipped when a set is read (a provider may publish encryption keys beside signing keys).

use ring::signature;
use serde_json::Value;

use super::{Alg, b64};

/// One public key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    /// The `alg` the key is published for, when it names one.
    pub(crate) alg: Option<Alg>,
    material: Material,
}

#[derive(Clone, PartialEq, Eq)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kty = match self.material {
            Material::Rsa { .. } => "RSA",
            Material::P256(_) => "EC P-256",
            Material::Ed25519(_) => "OKP Ed25519",
        };
        write!(f, "Jwk({kty}, kid {:?})", self.kid)
    }
}

impl Jwk {
    /// Reads one JWK: `Ok(None)` for a key bearerd does not verify with (another type or curve,
    /// `use` other than `sig`, an `alg` it does not accept), `Err` for a malformed one.
    pub(crate) fn from_json(v: &Value) -> Result<Option<Jwk>, String> {
        let obj = v.as_object().ok_or("a key is not a JSON object")?;
        let field = |name: &str| obj.get(name).and_then(Value::as_str);
        let bytes = |name: &str| -> Result<Vec<u8>, String> {
            let text = field(name).ok_or_else(|| format!("the key has no {name}"))?;
            b64(text).filter(|b| !b.is_empty()).ok_or_else(|| format!("the key's {name} is not base64url"))
        };
        if field("use").is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let alg = match field("alg") {
            None => None,
            Some(a) => match Alg::parse(a) {
                Ok(a) => Some(a),
                Err(_) => return Ok(None),
            },
        };
        let material = match field("kty") {
            Some("RSA") => Material::Rsa { n: bytes("n")?, e: bytes("e")? },
            Some("EC") if field("crv") == Some("P-256") => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("a P-256 key's x and y are 32 bytes each".into());
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Material::P256(point)
            }
            Some("OKP") if field("crv") == Some("Ed25519") => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err("an Ed25519 key's x is 32 bytes".into());
                }
                Material::Ed25519(x)
            }
            Some(_) => return Ok(None),
            None => return Err("a key has no kty".into()),
        };
        let key = Jwk { kid: field("kid").map(str::to_string), alg, material };
        if key.alg.is_some_and(|a| !key.fits(a)) {
            return Err(format!("a key's alg {} does not fit its kty", key.alg.map_or("", Alg::name)));
        }
        Ok(Some(key))
    }

    /// Whether this key can verify `alg` at all (its type, and the `alg` it is published for).
    pub(crate) fn fits(&self, alg: Alg) -> bool {
        let kind = matches!(
            (&self.material, alg),
            (Material::Rsa { .. }, Alg::Rs256 | Alg::Ps256)
                | (Material::P256(_), Alg::Es256)
                | (Material::Ed25519(_), Alg::EdDsa)
        );
        kind && self.alg.is_none_or(|a| a == alg)
    }

    /// Whether `signature` over `message` verifies with this key and `alg`.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Rsa { n, e }, Alg::Rs256 | Alg::Ps256) => {
                let params = if alg == Alg::Rs256 {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PSS_2048_8192_SHA256
                };
                signature::RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
            }
            (Material::P256(point), Alg::Es256) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::Ed25519(x), Alg::EdDsa) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            _ => false,
        }
    }
}

/// A JWK set: the keys bearerd can verify with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Jwks {
    pub(crate) keys: Vec<Jwk>,
}

impl Jwks {
    /// Reads `{"keys": [...]}`. A malformed key fails the whole set (better the last good set
    /// than a half-read one); keys bearerd cannot use are skipped.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let keys = v.get("keys").and_then(Value::as_array).ok_or("not a JWK set: no \"keys\" array")?;
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(key) = Jwk::from_json(k).map_err(|e| format!("keys/{i}: {e}"))? {
                out.push(key);
            }
        }
        Ok(Jwks { keys: out })
    }

    /// The keys that may have signed a JWS with `alg` and `kid`: the one with that `kid`, or
    /// every fitting key when the JWS names none.
    pub(crate) fn candidates<'a>(&'a self, alg: Alg, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// Whether a key has this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn es256() -> (signature::EcdsaKeyPair, Value) {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let kp = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let p = kp.public_key().as_ref();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "e1",
            "x": crate::jose::b64_encode(&p[1..33]), "y": crate::jose::b64_encode(&p[33..])});
        (kp, jwk)
    }

    #[test]
    fn an_es256_signature_verifies_with_its_key_and_no_other_algorithm() {
        let (kp, jwk) = es256();
        let key = Jwk::from_json(&jwk).unwrap().unwrap();
        let rng = ring::rand::SystemRandom::new();
        let sig = kp.sign(&rng, b"message").unwrap();
        assert!(key.verify(Alg::Es256, b"message", sig.as_ref()));
        assert!(!key.verify(Alg::Es256, b"massage", sig.as_ref()));
        assert!(!key.verify(Alg::Rs256, b"message", sig.as_ref()), "an EC key never verifies RSA");
        assert!(!key.fits(Alg::EdDsa));
    }

    #[test]
    fn an_ed25519_signature_verifies() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk =
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": crate::jose::b64_encode(kp.public_key().as_ref())});
        let key = Jwk::from_json(&jwk).unwrap().unwrap();
        assert!(key.verify(Alg::EdDsa, b"m", kp.sign(b"m").as_ref()));
        assert!(!key.verify(Alg::EdDsa, b"m", kp.sign(b"n").as_ref()));
    }

    #[test]
    fn sets_skip_keys_bearerd_cannot_use_and_refuse_malformed_ones() {
        let (_, ec) = es256();
        let set = serde_json::json!({"keys": [
            ec,
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "r1", "n": "AQAB", "e": "AQAB"},
        ]});
        let jwks = Jwks::parse(set.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.keys.len(), 2);
        assert!(jwks.has_kid("e1") && jwks.has_kid("r1") && !jwks.has_kid("x"));
        assert_eq!(jwks.candidates(Alg::Es256, None).count(), 1);
        assert_eq!(jwks.candidates(Alg::Rs256, Some("e1")).count(), 0);
        let bad = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]});
        assert!(Jwks::parse(bad.to_string().as_bytes()).unwrap_err().contains("keys/0"));
        let mismatch = serde_json::json!({"keys": [{"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"}]});
        assert!(Jwks::parse(mismatch.to_string().as_bytes()).is_err());
        assert!(Jwks::parse(b"{}").is_err());
        assert!(Jwks::parse(b"nope").is_err());
    }
}
