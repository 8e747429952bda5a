//! The plan of one request, a pure function of the snapshot, the request's head and its caller:
//! which app, which template (by name, or by method + host + path with the context values its
//! path captures), and the account its token is for. [`super::forward`] carries a plan out;
//! [`crate::admin::explain`] shows one without sending anything. Nothing here waits, reads a
//! body or touches a token.

use http::header::HeaderMap;
use http::{Method, Uri};

use super::connect::Tunneled;
use super::{Marks, ProxyError, Record, X_ACCOUNT, X_APP, truncate};
use crate::caller::{Admitted, User};
use crate::snapshot::{App, Snapshot};
use crate::template::Context;
use crate::token::{Account, AccountError};

/// What planning reads of a request: its head, where it came from, and whether it is
/// `POST /invoke/<name>`.
/// `'r`: what the plan's context may borrow (the path, the snapshot); `'h`: the rest of the
/// head, which the request gives up once the token is known.
#[derive(Clone, Copy)]
pub(crate) struct Head<'r, 'h> {
    pub(crate) method: &'h Method,
    pub(crate) uri: &'r Uri,
    pub(crate) headers: &'h HeaderMap,
    /// The request's host: its absolute form's or `:authority`, else `Host`.
    pub(crate) host: &'h str,
    pub(crate) marks: Marks,
    /// `Proxy-Authorization`, taken out of the headers.
    pub(crate) proxy_auth: Option<&'h [u8]>,
    pub(crate) tunnel: Option<&'h Tunneled>,
    pub(crate) invoke: bool,
}

/// A request planned: the app and template, the context its path captured (an invoke body adds
/// its own later), the request's own query string, and the account of the template's
/// integration.
pub(crate) struct Plan<'r, 'h> {
    pub(crate) app: usize,
    pub(crate) template: usize,
    pub(crate) ctx: Context<'r>,
    pub(crate) query: Option<&'r str>,
    /// `None` for a template without an integration.
    pub(crate) account: Option<Account<'h>>,
}

/// Plans `req` for `caller` (`None`: no callers are configured). `out` learns the app, the
/// template and the refused host as soon as they are known (for the access log and metrics).
pub(crate) fn plan<'r, 'h>(
    snap: &'r Snapshot,
    req: &Head<'r, 'h>,
    caller: Option<&'h Admitted>,
    out: &mut Record,
) -> Result<Plan<'r, 'h>, ProxyError> {
    // 1. Which app: the one the request names, the only one (of the caller's), or the only one
    //    whose templates match.
    let app = match named_app(snap, req.headers, req.marks, req.proxy_auth, req.tunnel, caller)? {
        Some(i) => i,
        None => only_app(snap, req, caller)?,
    };
    out.app = Some(app);
    let a = &snap.apps[app];
    // 2. Which template: by name, or by method + host + path (whose context values it captures).
    let mut ctx = Context::default();
    let (template, query) = if req.invoke {
        let name = &req.uri.path()["/invoke/".len()..];
        let t = *a.by_name.get(name).ok_or_else(|| ProxyError::TemplateNotFound(truncate(name, 100)))?;
        (t, None)
    } else {
        match a.router.find(req.method, req.host, req.uri.path()) {
            Some(m) => (ctx.capture(m), req.uri.query()),
            None => {
                // The access log names the refused host (never the path).
                let host = truncate(req.host, 255);
                out.host = Some(host.clone());
                return Err(ProxyError::NoMatch {
                    method: req.method.clone(),
                    host,
                    path: truncate(req.uri.path(), 255),
                });
            }
        }
    };
    out.template = Some(template);
    // 3. The account of the template's integration.
    let account = match a.templates()[template].integration {
        None => None,
        Some(i) => Some(account(snap, a, i, req, caller)?),
    };
    Ok(Plan { app, template, ctx, query, account })
}

/// The app a request names, if it names one: `x-bearerd-app`, else the user of its
/// `Proxy-Authorization: Basic` (`HTTP_PROXY=http://<app>:<secret>@host:port`), else the one its
/// tunnel's CONNECT named.
pub(crate) fn named_app(
    snap: &Snapshot,
    headers: &HeaderMap,
    marks: Marks,
    proxy_auth: Option<&[u8]>,
    tunnel: Option<&Tunneled>,
    caller: Option<&Admitted>,
) -> Result<Option<usize>, ProxyError> {
    let unknown = |how: &str, name: &str| {
        ProxyError::BadAppHeader(format!(
            "{how} names no app: {} (apps: {})",
            truncate(name, 100),
            super::connect::app_names(snap)
        ))
    };
    if marks.ours
        && let Some(v) = headers.get(X_APP)
    {
        let name = v.to_str().unwrap_or("");
        return snap.app_index(name).map(Some).ok_or_else(|| unknown("x-bearerd-app", name));
    }
    match caller.map(|c| &c.user) {
        Some(User::App(i)) => return Ok(Some(*i)),
        Some(User::Unknown(name)) => return Err(unknown("the Proxy-Authorization user", name)),
        Some(User::None) => {}
        // Without callers the credential only names the app (a `Bearer` one names none).
        None => {
            let named = proxy_auth.and_then(|v| {
                crate::caller::credential::basic_user(v, |user| {
                    user.map(|u| snap.app_index(u).ok_or_else(|| unknown("the Proxy-Authorization user", u)))
                })
            });
            if let Some(Some(app)) = named {
                return app.map(Some);
            }
        }
    }
    match tunnel.and_then(|t| t.app.as_deref()) {
        Some(name) => snap.app_index(name).map(Some).ok_or_else(|| unknown("the tunnel's CONNECT", name)),
        None => Ok(None),
    }
}

/// When the request names no app: the only app (of those the caller may use), else the only one
/// that declares the invoked template or whose templates match. None: 403 (404 for an invoke);
/// several: 400 naming them.
fn only_app(snap: &Snapshot, req: &Head<'_, '_>, caller: Option<&Admitted>) -> Result<usize, ProxyError> {
    let usable = |i: usize| caller.is_none_or(|c| snap.callers.get(c.caller).may_use(i));
    let mut usable_apps = (0..snap.apps.len()).filter(|&i| usable(i));
    if let (Some(i), None) = (usable_apps.next(), usable_apps.next()) {
        return Ok(i);
    }
    let matches = |a: &App| {
        if req.invoke {
            a.by_name.contains_key(&req.uri.path()["/invoke/".len()..])
        } else {
            a.router.find(req.method, req.host, req.uri.path()).is_some()
        }
    };
    let found = || (0..snap.apps.len()).filter(|&i| usable(i) && matches(&snap.apps[i]));
    let mut it = found();
    match (it.next(), it.next()) {
        (Some(i), None) => Ok(i),
        (None, _) if req.invoke => {
            Err(ProxyError::TemplateNotFound(truncate(&req.uri.path()["/invoke/".len()..], 100)))
        }
        (None, _) => Err(ProxyError::NoMatch {
            method: req.method.clone(),
            host: truncate(req.host, 255),
            path: truncate(req.uri.path(), 255),
        }),
        (Some(_), Some(_)) => {
            let names: Vec<&str> = found().map(|i| &*snap.apps[i].name).collect();
            Err(ProxyError::BadAppHeader(format!(
                "several apps match ({}): name one in the x-bearerd-app header or as the proxy URL's user \
                 (HTTP_PROXY=http://<app>:<secret>@host:port; without callers any password, such as x)",
                names.join(", ")
            )))
        }
    }
}

/// The account of integration `integration` of `app` that the request's token is for: the one
/// `x-bearerd-account` names or the caller's JWT binds (`accounts: {claim: X}`), by the account
/// rule of [`crate::token::account`].
fn account<'h>(
    snap: &Snapshot,
    app: &App,
    integration: usize,
    req: &Head<'_, 'h>,
    caller: Option<&'h Admitted>,
) -> Result<Account<'h>, ProxyError> {
    let integ = app.integration(integration);
    let header = match req.marks.ours.then(|| req.headers.get(X_ACCOUNT)).flatten() {
        Some(v) => Some(v.to_str().map_err(|_| bad_account())?),
        None => None,
    };
    let named = match caller.map(|c| (snap.callers.get(c.caller), c)) {
        Some((c, admitted)) if c.account_claim().is_some() => {
            let bound = admitted.account.as_deref();
            match (header, bound) {
                (Some(h), Some(b)) if h != b => {
                    return Err(ProxyError::AccountForbidden { caller: c.name.to_string(), account: truncate(h, 100) });
                }
                (Some(h), None) => {
                    return Err(ProxyError::AccountForbidden { caller: c.name.to_string(), account: truncate(h, 100) });
                }
                // An agent integration's account is the claim's value.
                (None, Some(b)) if integ.agent => Some(b),
                (h, _) => h,
            }
        }
        _ => header,
    };
    crate::token::account(integ, named).map_err(|e| match e {
        AccountError::Invalid => bad_account(),
        AccountError::Required(integration) => ProxyError::MissingAccount { integration },
    })
}

fn bad_account() -> ProxyError {
    ProxyError::BadAppHeader("x-bearerd-account must be 1-256 visible characters".into())
}
