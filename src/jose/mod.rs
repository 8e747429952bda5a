//! JOSE, as little of it as bearerd needs: compact JWS (RFC 7515) read and verified with ring,
//! public JWKs and JWK sets (RFC 7517) of the algorithms SPEC 2.2 allows (RS256, PS256, ES256,
//! EdDSA with Ed25519). `none` and the HMAC algorithms are never accepted: a key published for
//! verification must not be usable as a shared secret. Knows nothing of bearerd.

pub(crate) mod jwk;

use base64::Engine as _;
use serde_json::{Map, Value};

pub(crate) use jwk::{Jwk, Jwks};

/// The largest compact JWS read (a Kubernetes service-account token is about 1 KiB).
pub(crate) const MAX_JWS: usize = 16 * 1024;

/// A signature algorithm bearerd verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithm a JWS header or a JWK names; `Err` says why it is not accepted.
    pub(crate) fn parse(name: &str) -> Result<Alg, &'static str> {
        match name {
            "RS256" => Ok(Alg::Rs256),
            "PS256" => Ok(Alg::Ps256),
            "ES256" => Ok(Alg::Es256),
            "EdDSA" => Ok(Alg::EdDsa),
            "none" => Err("alg none is never accepted"),
            "HS256" | "HS384" | "HS512" => Err("HMAC algorithms are never accepted"),
            _ => Err("the algorithm is not one of RS256, PS256, ES256, EdDSA"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// Why a compact JWS could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoseError {
    #[error("not a compact JWS (three base64url parts)")]
    Shape,
    #[error("the {0} is not base64url")]
    Base64(&'static str),
    #[error("the {0} is not a JSON object")]
    Json(&'static str),
    #[error("the header names no alg")]
    NoAlg,
    #[error("{0}")]
    Alg(&'static str),
    #[error("the header has crit, which bearerd does not understand")]
    Crit,
}

/// A compact JWS read but not yet verified: its header's `alg` and `kid`, its payload, and what
/// its signature covers.
#[derive(Debug)]
pub(crate) struct Jws<'a> {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
    pub(crate) payload: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Reads `token` (`header.payload.signature`). The algorithm must be one bearerd accepts.
    pub(crate) fn parse(token: &'a str) -> Result<Jws<'a>, JoseError> {
        if token.len() > MAX_JWS {
            return Err(JoseError::Shape);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JoseError::Shape);
        };
        let header = object(h, "header")?;
        let alg = header.get("alg").and_then(Value::as_str).ok_or(JoseError::NoAlg)?;
        let alg = Alg::parse(alg).map_err(JoseError::Alg)?;
        if header.contains_key("crit") {
            return Err(JoseError::Crit);
        }
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_string);
        let payload = object(p, "payload")?;
        let signature = b64(s).ok_or(JoseError::Base64("signature"))?;
        Ok(Jws { alg, kid, payload, signing_input: &token[..h.len() + 1 + p.len()], signature })
    }

    /// Whether `key` signed this JWS with its algorithm.
    pub(crate) fn verified_by(&self, key: &Jwk) -> bool {
        key.verify(self.alg, self.signing_input.as_bytes(), &self.signature)
    }

    /// A claim that is a string.
    pub(crate) fn str_claim(&self, name: &str) -> Option<&str> {
        self.payload.get(name).and_then(Value::as_str)
    }

    /// A claim that is a number of seconds (`exp`, `nbf`, `iat`); `Err` when it is there but not
    /// a number.
    pub(crate) fn time_claim(&self, name: &str) -> Result<Option<u64>, ()> {
        match self.payload.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).map(Some).ok_or(())
            }
            Some(_) => Err(()),
        }
    }

    /// Whether `aud` (a string or an array of strings) holds `audience`.
    pub(crate) fn has_audience(&self, audience: &str) -> bool {
        match self.payload.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        }
    }
}

/// Whether `token` has the shape of a compact JWS (three parts, the first a base64url JSON
/// object): what tells a JWT from a secret.
pub(crate) fn looks_like_jws(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
        && token.split('.').next().is_some_and(|h| h.starts_with("eyJ") && b64(h).is_some())
}

fn object(part: &str, what: &'static str) -> Result<Map<String, Value>, JoseError> {
    let bytes = b64(part).ok_or(JoseError::Base64(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JoseError::Json(what)),
    }
}

/// base64url without padding (RFC 7515 2), as JOSE writes it.
pub(crate) fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// base64url without padding.
#[cfg(test)]
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(v: &Value) -> String {
        b64_encode(v.to_string().as_bytes())
    }

    fn token(header: Value, payload: Value) -> String {
        format!("{}.{}.{}", part(&header), part(&payload), b64_encode(b"sig"))
    }

    #[test]
    fn a_jws_is_read_and_its_algorithm_checked() {
        let t = token(serde_json::json!({"alg": "ES256", "kid": "k1"}), serde_json::json!({"iss": "x", "exp": 5}));
        let jws = Jws::parse(&t).unwrap();
        assert_eq!((jws.alg, jws.kid.as_deref()), (Alg::Es256, Some("k1")));
        assert_eq!(jws.str_claim("iss"), Some("x"));
        assert_eq!(jws.time_claim("exp"), Ok(Some(5)));
        assert_eq!(jws.time_claim("nbf"), Ok(None));
        assert!(looks_like_jws(&t));
        assert!(!looks_like_jws("a-plain-secret"));
        assert!(!looks_like_jws("not.a.jwt"));
        for (alg, why) in [("none", "alg none"), ("HS256", "HMAC"), ("RS512", "not one of")] {
            let t = token(serde_json::json!({"alg": alg}), serde_json::json!({}));
            let e = Jws::parse(&t).unwrap_err().to_string();
            assert!(e.contains(why), "{alg}: {e}");
        }
        let crit = token(serde_json::json!({"alg": "RS256", "crit": ["exp"]}), serde_json::json!({}));
        assert_eq!(Jws::parse(&crit).unwrap_err(), JoseError::Crit);
        assert_eq!(Jws::parse("a.b").unwrap_err(), JoseError::Shape);
        assert_eq!(Jws::parse("a.b.c.d").unwrap_err(), JoseError::Shape);
        assert_eq!(Jws::parse("!!.e30.c2ln").unwrap_err(), JoseError::Base64("header"));
        let not_object = format!("{}.e30.c2ln", b64_encode(b"[1]"));
        assert_eq!(Jws::parse(&not_object).unwrap_err(), JoseError::Json("header"));
    }

    #[test]
    fn audiences_as_a_string_or_a_list() {
        let one = token(serde_json::json!({"alg": "RS256"}), serde_json::json!({"aud": "bearerd"}));
        let many = token(serde_json::json!({"alg": "RS256"}), serde_json::json!({"aud": ["x", "bearerd"]}));
        let none = token(serde_json::json!({"alg": "RS256"}), serde_json::json!({"aud": 5}));
        assert!(Jws::parse(&one).unwrap().has_audience("bearerd"));
        assert!(Jws::parse(&many).unwrap().has_audience("bearerd"));
        assert!(!Jws::parse(&many).unwrap().has_audience("other"));
        assert!(!Jws::parse(&none).unwrap().has_audience("5"));
    }
}
