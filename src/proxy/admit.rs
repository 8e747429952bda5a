//! Admission (SPEC 2.2), in two steps around planning: first who is calling ([`caller`]),
//! before anything else is done for the request, so that a refused one costs no template, token
//! or body work; then, once the plan names the app and the account, whether that caller may use
//! them ([`admit`]). Without callers configured both let everything through, at the cost of one
//! comparison.

use std::sync::Arc;

use http::HeaderMap;

use super::connect::Tunneled;
use super::{ProxyError, truncate};
use crate::caller::{Admitted, ClientCert, Failure, Offered, User, credential};
use crate::snapshot::Snapshot;
use crate::token::Account;

/// The caller of a request, `None` when no callers are configured. A request inside a tunnel is
/// its CONNECT's caller (while that caller's token lasts); any other offers its credential in
/// its headers ([`credential::offered`]: `proxy_auth` is its `Proxy-Authorization`, taken out of
/// `headers`) or its TLS client certificate. `invoke`: the request is `/invoke` (401 rather than
/// 407, and `Authorization` may carry the credential). For the data plane's hot path,
/// [`known`] and [`verify`] are the two halves of this.
pub(crate) async fn caller(
    snap: &Snapshot,
    proxy_auth: Option<&[u8]>,
    headers: &HeaderMap,
    invoke: bool,
    tunnel: Option<&Tunneled>,
    cert: Option<&Arc<ClientCert>>,
) -> Result<Option<Admitted>, ProxyError> {
    match known(snap, proxy_auth, headers, invoke, tunnel, cert) {
        Known::Decided(r) => r,
        Known::Unseen(o) => Box::pin(verify(snap, o, invoke)).await,
    }
}

/// What is known of a request's caller without waiting.
pub(crate) enum Known<'h> {
    Decided(Result<Option<Admitted>, ProxyError>),
    /// A credential not seen before: [`verify`] it (a JWT may need its issuer's keys).
    Unseen(Offered<'h>),
}

/// The caller, when it can be told at once: no callers, a tunnel's, a credential verified before
/// (from the cache), a client certificate, or none at all; else the credential to verify.
#[inline]
pub(crate) fn known<'h>(
    snap: &Snapshot,
    proxy_auth: Option<&'h [u8]>,
    headers: &'h HeaderMap,
    invoke: bool,
    tunnel: Option<&Tunneled>,
    cert: Option<&Arc<ClientCert>>,
) -> Known<'h> {
    let callers = &snap.callers;
    if callers.is_empty() {
        return Known::Decided(Ok(None));
    }
    let admitted = match tunnel {
        Some(t) => of_tunnel(snap, t),
        None => match credential::offered(proxy_auth, headers, invoke) {
            Err(f) => Err(f),
            Ok(offered) => match callers.lookup(offered.as_ref(), cert.map(|c| &**c)) {
                Some(r) => r,
                None => match offered {
                    Some(o) => return Known::Unseen(o),
                    None => Err(Failure::Missing("no credential")),
                },
            },
        },
    };
    Known::Decided(refused(admitted, invoke))
}

/// Verifies a credential not seen before; what verified is remembered.
pub(crate) async fn verify(
    snap: &Snapshot,
    offered: Offered<'_>,
    invoke: bool,
) -> Result<Option<Admitted>, ProxyError> {
    refused(snap.callers.verify(&offered).await, invoke)
}

/// A failure as the answer's error; counted where the refusal is answered
/// ([`ProxyError::auth_reason`]).
fn refused(admitted: Result<Admitted, Failure>, invoke: bool) -> Result<Option<Admitted>, ProxyError> {
    admitted.map(Some).map_err(|failure| ProxyError::Unauthenticated { failure, invoke })
}

/// The caller a tunnel's CONNECT was admitted as, by name (a reload may have renumbered the
/// callers, or removed this one), while its token lasts.
fn of_tunnel(snap: &Snapshot, t: &Tunneled) -> Result<Admitted, Failure> {
    let Some(c) = &t.caller else {
        return Err(Failure::Missing("the tunnel's CONNECT had no caller credential: open a new tunnel with one"));
    };
    let caller = snap
        .callers
        .index(&c.name)
        .ok_or(Failure::Unknown("the tunnel's caller is no longer configured: open a new tunnel"))?;
    if c.expires.is_some_and(|exp| exp + crate::caller::LEEWAY <= crate::token::unix_now()) {
        return Err(Failure::Expired("the token the tunnel was opened with has expired: open a new tunnel"));
    }
    Ok(Admitted { caller, user: User::None, expires: c.expires, account: c.account.clone() })
}

/// Whether the caller may use the planned app and name the planned account (any but the
/// default account, which every caller of the app shares).
pub(crate) fn admit(
    snap: &Snapshot,
    app: usize,
    account: Option<&Account<'_>>,
    caller: &Admitted,
) -> Result<(), ProxyError> {
    let c = snap.callers.get(caller.caller);
    if !c.may_use(app) {
        return Err(ProxyError::CallerForbidden { caller: c.name.to_string(), app: snap.apps[app].name.to_string() });
    }
    if let Some(a) = account
        && !a.ignored
        && a.name != crate::token::DEFAULT_ACCOUNT
        && !c.may_name(a.name, caller.account.as_deref())
    {
        return Err(ProxyError::AccountForbidden { caller: c.name.to_string(), account: truncate(a.name, 100) });
    }
    Ok(())
}
