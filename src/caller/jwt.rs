//! JWTs of `jwt` callers (SPEC 2.2): a JWS signed with RS256, PS256, ES256 or EdDSA by a key of
//! the caller's JWKS (`kid` matched), whose `iss` and `aud` are the caller's, `exp` in the future
//! and `nbf`/`iat` not ahead ([`LEEWAY`] both ways), and whose claims equal the caller's
//! `claims`. Callers that share an issuer (service accounts of one cluster) are told apart by
//! their audience and claims: the first in configuration order that accepts the token is it.

use std::sync::Arc;

use serde_json::Value;

use super::keys::{KeySource, Keys};
use super::{Callers, Failure, Kind, LEEWAY};
use crate::config::callers::{AccountRule, JwtRule, KeysFrom};
use crate::jose::Jws;

/// What a `jwt` caller accepts, with its keys.
pub(super) struct Rule {
    issuer: String,
    audience: String,
    claims: Vec<(String, Value)>,
    keys: Arc<KeySource>,
}

impl Rule {
    pub(super) fn new(rule: &JwtRule, caller: &str, keys: &Keys) -> Rule {
        let keys = match &rule.keys {
            KeysFrom::File(jwks) => KeySource::file(jwks.clone()),
            KeysFrom::Url(url) => keys.url(url, caller),
        };
        Rule { issuer: rule.issuer.clone(), audience: rule.audience.clone(), claims: rule.claims.clone(), keys }
    }
}

/// The caller `token` identifies: its index, the token's `exp`, and the account its claim binds
/// (for `accounts: {claim: X}`).
pub(super) async fn verify(callers: &Callers, token: &str) -> Result<(usize, u64, Option<Arc<str>>), Failure> {
    let jws = Jws::parse(token).map_err(|e| Failure::Malformed(format!("not a JWT bearerd accepts: {e}")))?;
    let iss = jws.str_claim("iss").ok_or_else(|| Failure::Malformed("the token has no iss claim".into()))?;
    let rule = |i: usize| match &callers.list[i].kind {
        Kind::Jwt(r) => Some(r),
        _ => None,
    };
    let candidates: Vec<(usize, &Rule)> =
        callers.jwt.iter().filter_map(|&i| rule(i).map(|r| (i, r))).filter(|(_, r)| r.issuer == iss).collect();
    if candidates.is_empty() {
        return Err(Failure::Claims("wrong issuer: no caller accepts tokens of its issuer".into()));
    }
    // Each key source once, however many callers share it.
    let mut signed: Vec<&Arc<KeySource>> = Vec::new();
    let mut tried: Vec<&Arc<KeySource>> = Vec::new();
    for (_, r) in &candidates {
        if tried.iter().any(|s| Arc::ptr_eq(s, &r.keys)) {
            continue;
        }
        tried.push(&r.keys);
        if r.keys.verifies(&jws).await {
            signed.push(&r.keys);
        }
    }
    if signed.is_empty() {
        return Err(Failure::Unknown("the token is signed by no key its issuer publishes"));
    }
    let time = |name: &str| {
        jws.time_claim(name).map_err(|()| Failure::Malformed(format!("the token's {name} claim is not a number")))
    };
    let now = super::unix_now();
    let exp = time("exp")?.ok_or_else(|| Failure::Malformed("the token has no exp claim".into()))?;
    if exp + LEEWAY <= now {
        return Err(Failure::Expired("the token has expired"));
    }
    if time("nbf")?.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(Failure::Expired("the token is not valid yet (nbf)"));
    }
    if time("iat")?.is_some_and(|iat| iat > now + LEEWAY) {
        return Err(Failure::Expired("the token was issued in the future (iat)"));
    }
    let mut why: Option<String> = None;
    for (i, r) in candidates.iter().filter(|(_, r)| signed.iter().any(|s| Arc::ptr_eq(s, &r.keys))) {
        if !jws.has_audience(&r.audience) {
            why.get_or_insert_with(|| "wrong audience".into());
            continue;
        }
        if let Some((name, _)) = r.claims.iter().find(|(name, want)| jws.payload.get(name) != Some(want)) {
            why.get_or_insert_with(|| format!("its {name} claim is not the caller's"));
            continue;
        }
        let account = match &callers.list[*i].accounts {
            AccountRule::Claim(c) => match jws.payload.get(c) {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.as_str().into()),
                Some(Value::Number(n)) => Some(n.to_string().into()),
                _ => None,
            },
            _ => None,
        };
        return Ok((*i, exp, account));
    }
    Err(Failure::Claims(why.unwrap_or_else(|| "no caller accepts it".into())))
}
