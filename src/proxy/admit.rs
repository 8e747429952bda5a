//! Admission (SPEC 2.2), in two steps around planning: first who is calling ([`caller`]),
//! before anything else is done for the request, so that a refused one costs no template, token
//! or body work; then, once the plan names the app and the account, whether that caller may use
//! them ([`admit`]). Without callers configured both let everything through, at the cost of one
//! comparison.

use std::sync::Arc;

use http::HeaderMap;

use super::connect::Tunneled;
use super::{Marks, ProxyError, truncate};
use crate::caller::{Admitted, ClientCert, Failure, User, credential};
use crate::snapshot::Snapshot;
use crate::token::Account;

/// The caller of a request, `None` when no callers are configured. A request inside a tunnel is
/// its CONNECT's caller (while that caller's token lasts); any other offers its credential in
/// its headers ([`credential::offered`]) or its TLS client certificate. `invoke`: the request is
/// `/invoke` (401 rather than 407, and `Authorization` may carry the credential).
pub(crate) async fn caller(
    snap: &Snapshot,
    headers: &HeaderMap,
    marks: Marks,
    invoke: bool,
    tunnel: Option<&Tunneled>,
    cert: Option<&Arc<ClientCert>>,
) -> Result<Option<Admitted>, ProxyError> {
    let callers = &snap.callers;
    if callers.is_empty() {
        return Ok(None);
    }
    let admitted = match tunnel {
        Some(t) => of_tunnel(snap, t),
        None => match credential::offered(headers, invoke, marks.hop_by_hop) {
            Err(f) => Err(f),
            Ok(offered) => match callers.lookup(offered.as_ref(), cert.map(|c| &**c)) {
                Some(r) => r,
                // Not seen before: verified (a JWT may need its issuer's keys), then remembered.
                None => match &offered {
                    Some(o) => Box::pin(callers.verify(o)).await,
                    None => Err(Failure::Missing("no credential")),
                },
            },
        },
    };
    // Counted where the refusal is answered ([`ProxyError::auth_reason`]).
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
