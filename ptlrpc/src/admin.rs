//! The admin endpoint every daemon serves over HTTP.
//!
//! Owns the routes and the text forms of fault points: `GET /metrics`
//! (Prometheus text from every registered source), `GET /faults` (what is
//! armed and what fired), `PUT /faults/<point>` with a trigger in the body
//! (`once`, `every N`, `random N`), `DELETE /faults/<point>` and
//! `DELETE /faults`. Bad input gets a 400 naming what is wrong. Knows
//! nothing of services beyond the renderers and the injector it is given.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::fault::{FaultInjector, FaultKind, FaultPoint, Trigger};

/// Something that renders Prometheus text (a service's registry, lnet counters...).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Admin {
    sources: Arc<Vec<MetricsSource>>,
    faults: Arc<FaultInjector>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("sources", &self.sources.len()).field("faults", &self.faults).finish()
    }
}

/// A fault point or trigger that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// `request_drop`, `reply_drop`, `reply_delay:<seconds>`, `bulk_corrupt`.
impl FromStr for FaultPoint {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<FaultPoint, ParseError> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(n, a)| (n, Some(a)));
        let point = match (name, arg) {
            ("request_drop", None) => FaultPoint::RequestDrop,
            ("reply_drop", None) => FaultPoint::ReplyDrop,
            ("bulk_corrupt", None) => FaultPoint::BulkCorrupt,
            ("reply_delay", Some(a)) => {
                let secs: f64 = a.parse().map_err(|_| ParseError(format!("reply_delay takes seconds, not '{a}'")))?;
                let d = Duration::try_from_secs_f64(secs)
                    .map_err(|_| ParseError(format!("reply_delay of {secs} s is not a duration")))?;
                FaultPoint::ReplyDelay(d)
            }
            ("reply_delay", None) => return Err(ParseError("reply_delay needs seconds: reply_delay:2.5".into())),
            _ => {
                return Err(ParseError(format!(
                    "unknown fault point '{s}' (request_drop, reply_drop, reply_delay:<secs>, bulk_corrupt)"
                )));
            }
        };
        Ok(point)
    }
}

impl FromStr for FaultKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<FaultKind, ParseError> {
        match s {
            "request_drop" => Ok(FaultKind::RequestDrop),
            "reply_drop" => Ok(FaultKind::ReplyDrop),
            "reply_delay" => Ok(FaultKind::ReplyDelay),
            "bulk_corrupt" => Ok(FaultKind::BulkCorrupt),
            _ => Err(ParseError(format!("unknown fault point '{s}'"))),
        }
    }
}

/// `once`, `every N`, `random N` (fire with probability 1/N).
impl FromStr for Trigger {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Trigger, ParseError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let n = |w: &str| -> Result<u32, ParseError> {
            match w.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ParseError(format!("'{w}' is not a whole number >= 1"))),
            }
        };
        match words.as_slice() {
            ["once"] => Ok(Trigger::Once),
            ["times", k] => Ok(Trigger::Times(n(k)?)),
            ["every", k] => Ok(Trigger::EveryN(n(k)?)),
            ["random", k] => Ok(Trigger::Random1InN(n(k)?)),
            _ => Err(ParseError(format!("trigger '{s}': expected 'once', 'times N', 'every N' or 'random N'"))),
        }
    }
}

impl Admin {
    /// An endpoint over these metrics sources and this injector.
    pub fn new(sources: Vec<MetricsSource>, faults: Arc<FaultInjector>) -> Admin {
        Admin { sources: Arc::new(sources), faults }
    }

    /// The routes, for embedding or testing.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/faults", get(faults_list).delete(faults_clear_all))
            .route("/faults/{point}", axum::routing::put(fault_set).delete(fault_clear))
            .with_state(self.clone())
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    let mut out = String::new();
    for s in a.sources.iter() {
        out.push_str(&s());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

async fn faults_list(State(a): State<Admin>) -> String {
    format!("{:#?}\n", a.faults)
}

async fn faults_clear_all(State(a): State<Admin>) -> StatusCode {
    a.faults.clear_all();
    StatusCode::NO_CONTENT
}

async fn fault_set(State(a): State<Admin>, Path(point): Path<String>, body: String) -> Response {
    let parsed = point.parse::<FaultPoint>().and_then(|p| Ok((p, body.trim().parse::<Trigger>()?)));
    match parsed {
        Ok((p, t)) => {
            tracing::warn!(point = ?p, trigger = ?t, "fault point armed through the admin endpoint");
            a.faults.set(p, t);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn fault_clear(State(a): State<Admin>, Path(point): Path<String>) -> Response {
    let name = point.split(':').next().unwrap_or(&point);
    match name.parse::<FaultKind>() {
        Ok(k) => {
            a.faults.clear(k);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_points_and_triggers() {
        assert_eq!("bulk_corrupt".parse::<FaultPoint>(), Ok(FaultPoint::BulkCorrupt));
        assert_eq!("reply_delay:1.5".parse::<FaultPoint>(), Ok(FaultPoint::ReplyDelay(Duration::from_millis(1500))));
        assert!("reply_delay".parse::<FaultPoint>().unwrap_err().0.contains("needs seconds"));
        assert!("reply_delay:-1".parse::<FaultPoint>().is_err());
        assert!("0x80000505".parse::<FaultPoint>().unwrap_err().0.contains("unknown fault point"));
        assert_eq!("every 3".parse::<Trigger>(), Ok(Trigger::EveryN(3)));
        assert_eq!("times 2".parse::<Trigger>(), Ok(Trigger::Times(2)));
        assert_eq!(" random  10 ".parse::<Trigger>(), Ok(Trigger::Random1InN(10)));
        assert!("every 0".parse::<Trigger>().is_err());
        assert!("sometimes".parse::<Trigger>().is_err());
    }

    async fn http(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn arms_faults_and_serves_metrics_over_http() {
        let faults = Arc::new(FaultInjector::new(1));
        let admin = Admin::new(vec![Arc::new(|| "sheen_up 1\n".to_string())], Arc::clone(&faults));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(admin.serve(l));
        let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("sheen_up 1"), "{r}");
        let r = http(
            addr,
            "PUT /faults/bulk_corrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nonce",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 204"), "{r}");
        assert_eq!(faults.check(FaultKind::BulkCorrupt), Some(FaultPoint::BulkCorrupt));
        assert_eq!(faults.check(FaultKind::BulkCorrupt), None, "once");
        let r =
            http(addr, "PUT /faults/bogus HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nonce")
                .await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("unknown fault point"), "{r}");
        let r = http(
            addr,
            "PUT /faults/reply_drop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 7\r\n\r\nevery 2",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 204"), "{r}");
        let r = http(addr, "DELETE /faults/reply_drop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 204"), "{r}");
        assert_eq!(faults.check(FaultKind::ReplyDrop), None);
        task.abort();
    }
}
