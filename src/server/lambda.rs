//! bearerd as an AWS Lambda external extension (SPEC 7), driven by the Extensions API at
//! `$AWS_LAMBDA_RUNTIME_API`: register once the listeners are bound, then ask for events until
//! `SHUTDOWN`, whose `deadlineMs` bounds the shutdown; a configuration that does not load is
//! reported with `init/error`, a later fatal error with `exit/error`.
//!
//! The API is plain HTTP/1.1 on a link-local address: one connection per call, made directly
//! (never through the function's `HTTP_PROXY`). `event/next` blocks until Lambda has an event,
//! and nothing runs while the environment is frozen between invocations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use tokio::signal::unix::Signal;

use super::Running;

const PREFIX: &str = "/2020-01-01/extension";
/// Register and the error reports answer at once; `event/next` has no limit (it waits for
/// Lambda's next event, which may be long in coming).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// What is kept back from a `SHUTDOWN` deadline for exiting once in-flight requests are done.
const EXIT_MARGIN: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("the Extensions API at {api}: {reason}")]
    Api { api: String, reason: String },
    #[error("the Extensions API answered {call} with {status}: {body}")]
    Status { call: &'static str, status: StatusCode, body: String },
    #[error("the Extensions API's {call} answer: {reason}")]
    Answer { call: &'static str, reason: String },
}

/// The Extensions API of this execution environment.
#[derive(Clone, Debug)]
pub struct RuntimeApi {
    authority: String,
}

/// This process, registered: the identifier every later call carries.
#[derive(Debug)]
pub struct Registered {
    api: RuntimeApi,
    id: String,
}

/// An event from `event/next`.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Invoke {
        request_id: String,
    },
    /// `deadline_ms`: Unix time in milliseconds by which the process must have exited.
    Shutdown {
        reason: String,
        deadline_ms: u64,
    },
}

impl RuntimeApi {
    /// From `$AWS_LAMBDA_RUNTIME_API`; `None` outside Lambda.
    pub fn from_env() -> Option<RuntimeApi> {
        std::env::var(crate::config::LAMBDA_RUNTIME_API)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|a| RuntimeApi { authority: a })
    }

    /// `POST /extension/register` for `INVOKE` and `SHUTDOWN`, as `name` (the file name Lambda
    /// started this process as).
    pub async fn register(&self, name: &str) -> Result<Registered, LambdaError> {
        let body = Bytes::from_static(br#"{"events":["INVOKE","SHUTDOWN"]}"#);
        let headers = [("lambda-extension-name", name)];
        let (parts, _) = self.call("register", Method::POST, &headers, body, Some(CALL_TIMEOUT)).await?;
        let id = parts
            .headers
            .get("lambda-extension-identifier")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(LambdaError::Answer { call: "register", reason: "no Lambda-Extension-Identifier".into() })?;
        Ok(Registered { api: self.clone(), id: id.to_string() })
    }

    /// `method` `PREFIX/call` with `headers` and `body`, on a connection of its own; an answer
    /// other than 2xx is an error.
    async fn call(
        &self,
        call: &'static str,
        method: Method,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(http::response::Parts, Bytes), LambdaError> {
        let fail = |what: &dyn std::fmt::Display| self.error(format!("{call}: {what}"));
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| fail(&format_args!("cannot connect: {e}")))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(&e))?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{PREFIX}/{call}"))
                .header(http::header::HOST, &self.authority)
                .header(http::header::CONTENT_TYPE, "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(body)).map_err(|e| fail(&e))?;
            let (parts, body) = sender.send_request(req).await.map_err(|e| fail(&e))?.into_parts();
            let body = body.collect().await.map_err(|e| fail(&e))?.to_bytes();
            Ok::<_, LambdaError>((parts, body))
        };
        let (parts, body) = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| fail(&"no answer"))?,
            None => exchange.await,
        }?;
        if !parts.status.is_success() {
            let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(LambdaError::Status { call, status: parts.status, body });
        }
        Ok((parts, body))
    }

    fn error(&self, reason: String) -> LambdaError {
        LambdaError::Api { api: self.authority.clone(), reason }
    }
}

impl Registered {
    /// `GET /extension/event/next`: waits for the next event.
    pub async fn next(&self) -> Result<Event, LambdaError> {
        let headers = [("lambda-extension-identifier", self.id.as_str())];
        let (_, body) = self.api.call("event/next", Method::GET, &headers, Bytes::new(), None).await?;
        parse_event(&body)
    }

    /// `POST /extension/init/error` (the function's init fails with this reason) or
    /// `/extension/exit/error` (`exit`: a fatal error after init).
    pub async fn report(&self, exit: bool, error_type: &str, message: &str) -> Result<(), LambdaError> {
        let call = if exit { "exit/error" } else { "init/error" };
        let body = serde_json::json!({"errorMessage": message, "errorType": error_type}).to_string();
        let headers =
            [("lambda-extension-identifier", self.id.as_str()), ("lambda-extension-function-error-type", error_type)];
        self.api.call(call, Method::POST, &headers, Bytes::from(body), Some(CALL_TIMEOUT)).await.map(drop)
    }
}

fn parse_event(body: &[u8]) -> Result<Event, LambdaError> {
    let bad = |reason: String| LambdaError::Answer { call: "event/next", reason };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    match v.get("eventType").and_then(|t| t.as_str()) {
        Some(t) if t.eq_ignore_ascii_case("INVOKE") => Ok(Event::Invoke { request_id: text("requestId") }),
        Some(t) if t.eq_ignore_ascii_case("SHUTDOWN") => {
            let deadline_ms = v
                .get("deadlineMs")
                .and_then(|d| d.as_u64().or_else(|| d.as_f64().map(|f| f as u64)))
                .ok_or_else(|| bad("a SHUTDOWN event without deadlineMs".into()))?;
            Ok(Event::Shutdown { reason: text("shutdownReason"), deadline_ms })
        }
        other => Err(bad(format!("unknown eventType {other:?}"))),
    }
}

/// The file name this process was started as: Lambda starts `/opt/extensions/<name>` and the
/// registration must carry that name.
pub fn own_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bearerd".into())
}

/// How long from now until `deadline_ms` (Unix milliseconds), less what exiting needs.
fn time_left(deadline_ms: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(deadline_ms.saturating_sub(now));
    left.saturating_sub(EXIT_MARGIN.min(left / 2))
}

/// The extension's life once bearerd is serving: register, then events until `SHUTDOWN`, whose
/// deadline bounds the shutdown. SIGTERM or SIGINT (outside Lambda's protocol) shut down as they
/// do outside Lambda. Returns the process's exit code.
pub async fn serve(api: RuntimeApi, name: &str, running: Running, mut term: Signal, mut int: Signal) -> u8 {
    let me = match api.register(name).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot register as a Lambda extension");
            return 1;
        }
    };
    tracing::info!(extension = name, "registered as a Lambda extension");
    loop {
        let event = tokio::select! {
            e = me.next() => e,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        match event {
            Ok(Event::Invoke { request_id }) => tracing::debug!(request_id, "INVOKE"),
            Ok(Event::Shutdown { reason, deadline_ms }) => {
                let left = time_left(deadline_ms);
                tracing::info!(reason, left_ms = left.as_millis() as u64, "SHUTDOWN: finishing in-flight requests");
                running.shutdown_within(left).await;
                tracing::info!("stopped");
                return 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "the Extensions API failed; exiting");
                if let Err(e2) = me.report(true, "Extension.EventNextFailed", &e.to_string()).await {
                    tracing::warn!(error = %e2, "cannot report the error to Lambda");
                }
                return 1;
            }
        }
    }
    tracing::info!("a signal: shutting down");
    running.shutdown().await;
    0
}

/// Reports a start that failed (a configuration that does not load, a listener that cannot be
/// bound) to Lambda, so that the function's init fails with the reason: it registers first, as
/// the API requires.
pub async fn fail_init(api: RuntimeApi, name: &str, error_type: &str, message: &str) {
    let reported = match api.register(name).await {
        Ok(me) => me.report(false, error_type, message).await,
        Err(e) => Err(e),
    };
    if let Err(e) = reported {
        tracing::error!(error = %e, "cannot report the failed start to Lambda");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_as_lambda_sends_them() {
        let invoke = br#"{"eventType":"INVOKE","deadlineMs":1700000000000,"requestId":"r-1","invokedFunctionArn":"arn:x","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1"}}"#;
        assert_eq!(parse_event(invoke).unwrap(), Event::Invoke { request_id: "r-1".into() });
        let shutdown = br#"{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":1700000002000}"#;
        assert_eq!(
            parse_event(shutdown).unwrap(),
            Event::Shutdown { reason: "spindown".into(), deadline_ms: 1_700_000_002_000 }
        );
        // Any case, as SPEC 7 says of the reason; the event type too.
        let lower = br#"{"eventType":"shutdown","shutdownReason":"TIMEOUT","deadlineMs":5}"#;
        assert!(matches!(parse_event(lower).unwrap(), Event::Shutdown { deadline_ms: 5, .. }));
        assert!(parse_event(br#"{"eventType":"SHUTDOWN"}"#).is_err(), "no deadline");
        assert!(parse_event(br#"{"eventType":"RESTORE"}"#).is_err());
        assert!(parse_event(b"<html>").is_err());
    }

    #[test]
    fn the_time_left_keeps_a_margin_and_never_underflows() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = time_left(now + 2000);
        assert!(left <= Duration::from_millis(1850) && left >= Duration::from_millis(1700), "{left:?}");
        assert_eq!(time_left(now.saturating_sub(10)), Duration::ZERO);
        assert!(time_left(now + 100) <= Duration::from_millis(50));
    }
}
