//! JWTs signed in the test, as a platform would issue them (RS256 and PS256 with the fixture RSA
//! keys in `tests/fixtures/`, ES256 and EdDSA with keys made here), their public JWKs, and a
//! JWKS server that counts its fetches.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::signature::{self, KeyPair as _};
use serde_json::{Value, json};

use super::{MockApi, Reply, TestCa};

/// A signing key with its `kid` and algorithm.
pub struct Signer {
    pub kid: String,
    pub alg: &'static str,
    key: Key,
}

enum Key {
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl Signer {
    /// RS256 (or PS256 with `alg`) with the fixture key `tests/fixtures/test-rsa-<which>.pem`.
    pub fn rsa(which: &str, kid: &str, alg: &'static str) -> Signer {
        use rustls_pki_types::pem::PemObject as _;
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/test-rsa-{which}.pem"));
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(&path).unwrap();
        let key = signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        Signer { kid: kid.into(), alg, key: Key::Rsa(key) }
    }

    pub fn es256(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Signer { kid: kid.into(), alg: "ES256", key: Key::Ec(key) }
    }

    pub fn ed25519(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Signer { kid: kid.into(), alg: "EdDSA", key: Key::Ed(key) }
    }

    /// The public JWK, with `kid`.
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": self.kid, "n": b64(&c.n), "e": b64(&c.e), "use": "sig"})
            }
            Key::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Key::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(k.public_key().as_ref())}),
        }
    }

    /// The RSA public key's modulus and exponent as a DER SubjectPublicKeyInfo would hold them
    /// (what an HS256 forgery keys its HMAC with).
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.key {
            Key::Rsa(k) => k.public().as_ref().to_vec(),
            Key::Ec(k) => k.public_key().as_ref().to_vec(),
            Key::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// A compact JWS of `claims` with header `{alg, kid, typ: JWT}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A compact JWS with the header given as it is.
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = ring::rand::SystemRandom::new();
        let sig = match &self.key {
            Key::Rsa(k) => {
                let pad: &dyn signature::RsaEncoding =
                    if self.alg == "PS256" { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(pad, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
            Key::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// `{"keys": [...]}` of the signers' public keys.
pub fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

/// An unsigned-in-spirit token: `header.payload.signature` with the parts given.
pub fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(signature))
}

/// HMAC-SHA256 of a JWS's signing input keyed with `key`: the "HS256 with the public key"
/// forgery.
pub fn hs256(claims: &Value, kid: &str, key: &[u8]) -> String {
    let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A JWKS server over TLS (the test CA): serves what `keys` holds, with `Cache-Control:
/// max-age=<max_age>`, or 503 while `down` is set; `api.count()` is the number of fetches.
pub struct JwksServer {
    pub api: MockApi,
    pub keys: Arc<Mutex<Value>>,
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksServer {
    pub async fn start(ca: &TestCa, keys: Value, max_age: u64) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (k, d) = (keys.clone(), down.clone());
        let api = MockApi::start(
            Some(ca.server.clone()),
            Arc::new(move |_, _| {
                if d.load(std::sync::atomic::Ordering::SeqCst) {
                    return Reply::status(503);
                }
                Reply::ok(&k.lock().unwrap().to_string()).header("cache-control", &format!("max-age={max_age}"))
            }),
        )
        .await;
        JwksServer { api, keys, down }
    }

    pub fn url(&self) -> String {
        format!("https://{}/jwks", self.api.host())
    }
}
