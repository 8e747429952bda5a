//! An emulator of the AWS Lambda Extensions API (API version 2020-01-01), as AWS documents it,
//! for one external extension: `register` (only during init, once, with a name and the events
//! `INVOKE`/`SHUTDOWN`), `event/next` (blocks until the test sends an event; the extension's
//! identifier required), `init/error` (only before the first `event/next`) and `exit/error`,
//! both with `Lambda-Extension-Function-Error-Type`. Every protocol mistake is answered as
//! Lambda answers it (400/403 with `{errorMessage, errorType}`) and recorded, so a test can
//! assert there were none.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const IDENTIFIER: &str = "lambda-extension-identifier";
const ERROR_TYPE: &str = "lambda-extension-function-error-type";

#[derive(Default)]
struct State {
    /// The name it registered as, and its identifier.
    registered: Option<(String, String)>,
    events_asked: Vec<String>,
    /// How many `event/next` calls have been made; whether one is waiting now.
    nexts: usize,
    waiting: bool,
    queue: VecDeque<Value>,
    shutdown_sent: bool,
    init_errors: Vec<(String, Value)>,
    exit_errors: Vec<(String, Value)>,
    mistakes: Vec<String>,
}

/// A running emulator.
#[derive(Clone)]
pub struct Lambda {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Woken on every change (an event queued, a call arrived).
    changed: Arc<Notify>,
}

impl Lambda {
    pub async fn start() -> Lambda {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lambda = Lambda { addr, state: Arc::default(), changed: Arc::new(Notify::new()) };
        let l = lambda.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let l = l.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let l = l.clone();
                        async move { Ok::<_, Infallible>(l.handle(req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        lambda
    }

    /// `AWS_LAMBDA_RUNTIME_API`'s value.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Changes the state and wakes whoever waits for a change.
    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = self.with(f);
        self.changed.notify_waiters();
        r
    }

    /// Waits until `check` holds (checked on every change), at most `within`.
    pub async fn until(&self, within: Duration, what: &str, check: impl Fn(&Lambda) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if check(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() && !check(self) {
                panic!("the Lambda emulator: not within {within:?}: {what}");
            }
        }
    }

    /// The name the extension registered as.
    pub fn registered_as(&self) -> Option<String> {
        self.with(|s| s.registered.as_ref().map(|r| r.0.clone()))
    }

    /// The events it registered for.
    pub fn events_asked(&self) -> Vec<String> {
        self.with(|s| s.events_asked.clone())
    }

    /// Whether the extension is waiting in `event/next` (ready: its init, or its part of an
    /// invocation, is done), and how many times it has asked.
    pub fn waiting(&self) -> bool {
        self.with(|s| s.waiting)
    }

    pub fn nexts(&self) -> usize {
        self.with(|s| s.nexts)
    }

    /// Waits until the extension is waiting in `event/next` after `after` calls of it.
    pub async fn ready_after(&self, after: usize, within: Duration) {
        self.until(within, "the extension waits in event/next", |l| l.with(|s| s.waiting && s.nexts > after)).await;
    }

    /// Sends an `INVOKE` event, as Lambda does when the function is invoked.
    pub fn invoke(&self, request_id: &str) {
        let deadline = now_ms() + 3_000;
        self.change(|s| {
            s.queue.push_back(json!({
                "eventType": "INVOKE",
                "deadlineMs": deadline,
                "requestId": request_id,
                "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:test",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
            }))
        });
    }

    /// Sends `SHUTDOWN` with a deadline `within` from now; its `deadlineMs`.
    pub fn shutdown(&self, reason: &str, within: Duration) -> u64 {
        let deadline = now_ms() + within.as_millis() as u64;
        self.change(|s| {
            s.queue.push_back(json!({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline}))
        });
        deadline
    }

    pub fn init_errors(&self) -> Vec<(String, Value)> {
        self.with(|s| s.init_errors.clone())
    }

    pub fn exit_errors(&self) -> Vec<(String, Value)> {
        self.with(|s| s.exit_errors.clone())
    }

    /// Protocol mistakes the extension made.
    pub fn mistakes(&self) -> Vec<String> {
        self.with(|s| s.mistakes.clone())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let header = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let path = parts.uri.path().to_string();
        let method = parts.method.as_str().to_string();
        let refuse = |status: u16, kind: &str, message: String| {
            self.change(|s| s.mistakes.push(format!("{method} {path}: {message}")));
            answer(status, json!({"errorMessage": message, "errorType": kind}))
        };
        let id = header(IDENTIFIER);
        let known = self.with(|s| s.registered.as_ref().is_some_and(|r| Some(&r.1) == id.as_ref()));
        match (parts.method.as_str(), path.as_str()) {
            ("POST", "/2020-01-01/extension/register") => {
                let Some(name) = header("lambda-extension-name").filter(|n| !n.is_empty()) else {
                    return refuse(400, "InvalidRequest", "no Lambda-Extension-Name".into());
                };
                let events: Vec<String> = match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => v["events"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                    Err(e) => return refuse(400, "InvalidRequest", format!("the body is not JSON: {e}")),
                };
                if let Some(e) = events.iter().find(|e| *e != "INVOKE" && *e != "SHUTDOWN") {
                    return refuse(400, "InvalidRequest", format!("unknown event {e}"));
                }
                if self.with(|s| s.registered.is_some()) {
                    return refuse(403, "Extension.ForbiddenError", "registered already".into());
                }
                let id = format!("{:032x}", now_ms() as u128 * 7919);
                self.change(|s| {
                    s.registered = Some((name, id.clone()));
                    s.events_asked = events;
                });
                let mut r = answer(
                    200,
                    json!({"functionName": "test", "functionVersion": "$LATEST", "handler": "index.handler"}),
                );
                r.headers_mut().insert(IDENTIFIER, id.parse().unwrap());
                r
            }
            ("GET", "/2020-01-01/extension/event/next") => {
                if !known {
                    return refuse(403, "Extension.ForbiddenError", "unknown or missing identifier".into());
                }
                if self.with(|s| s.shutdown_sent) {
                    return refuse(403, "Extension.ForbiddenError", "event/next after SHUTDOWN".into());
                }
                self.change(|s| {
                    s.nexts += 1;
                    s.waiting = true;
                });
                let event = loop {
                    let changed = self.changed.notified();
                    if let Some(e) = self.with(|s| s.queue.pop_front()) {
                        break e;
                    }
                    changed.await;
                };
                self.change(|s| {
                    s.waiting = false;
                    s.shutdown_sent |= event["eventType"] == "SHUTDOWN";
                });
                let mut r = answer(200, event);
                r.headers_mut().insert("lambda-extension-event-identifier", "e-1".parse().unwrap());
                r
            }
            ("POST", p @ ("/2020-01-01/extension/init/error" | "/2020-01-01/extension/exit/error")) => {
                if !known {
                    return refuse(403, "Extension.ForbiddenError", "unknown or missing identifier".into());
                }
                let Some(kind) = header(ERROR_TYPE).filter(|k| k.starts_with("Extension.")) else {
                    return refuse(400, "InvalidRequest", "no Lambda-Extension-Function-Error-Type Extension.*".into());
                };
                let Ok(report) = serde_json::from_slice::<Value>(&body) else {
                    return refuse(400, "InvalidRequest", "the error report is not JSON".into());
                };
                let init = p.ends_with("init/error");
                if init && self.with(|s| s.nexts > 0) {
                    return refuse(403, "Extension.ForbiddenError", "init/error after init".into());
                }
                self.change(
                    |s| if init { s.init_errors.push((kind, report)) } else { s.exit_errors.push((kind, report)) },
                );
                answer(202, json!({"status": "OK"}))
            }
            _ => refuse(404, "InvalidRequest", "no such endpoint".into()),
        }
    }
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}
