//! A fault-injecting HTTP proxy in front of moto: every AWS call of the handler under test goes through it, and
//! rules matched on the request (method, path, headers, nth match) answer an error *before* forwarding (the call
//! had no effect), *after* forwarding (the effect happened, the answer is lost), delay the call, or hang it (a
//! crash of the caller). The proxy counts the requests each rule matched, so tests can assert e.g. that
//! PublishLayerVersion reached Lambda exactly once.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;

/// What a matched request gets.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer this error without forwarding: the call had no effect.
    Before(Canned),
    /// Forward, then answer this error instead of the real answer: the effect happened, the answer is lost.
    After(Canned),
    /// Forward after waiting.
    Delay(Duration),
    /// Never answer (the caller is cut off, as by a crash).
    Hang,
}

/// An error answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Canned {
    /// A Lambda (restJson1) error: the code in `x-amzn-ErrorType`, as Lambda sends it.
    pub fn lambda(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("x-amzn-errortype", code.to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            body: serde_json::json!({"Type": "User", "message": message}).to_string(),
        }
    }

    /// An S3 (restXml) error.
    pub fn s3(status: u16, code: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/xml".to_owned())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
            ),
        }
    }
}

/// The parts of a request a rule looks at.
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string without `?` (empty when there is none): `tagging` tells GetObjectTagging from GetObject.
    pub query: &'a str,
    pub headers: &'a hyper::HeaderMap,
}

impl Seen<'_> {
    pub fn is_publish_layer_version(&self) -> bool {
        self.method == "POST"
            && self.path.starts_with("/2018-10-31/layers/")
            && self.path.ends_with("/versions")
    }

    /// A PutObject of a claim: `If-None-Match` creates it, `If-Match` records an outcome or takes it over.
    pub fn is_claim_put(&self, condition: &str) -> bool {
        self.method == "PUT"
            && self.path.contains("/.layerforge/claims/")
            && self.headers.contains_key(condition)
    }
}

type Matcher = Box<dyn Fn(&Seen<'_>) -> bool + Send + Sync>;

/// One rule: requests it matches are counted; the `nth` matches (1-based) get `action`.
pub struct Rule {
    matcher: Matcher,
    nth: Vec<usize>,
    action: Action,
    matched: AtomicUsize,
}

impl Rule {
    pub fn new(
        matcher: impl Fn(&Seen<'_>) -> bool + Send + Sync + 'static,
        nth: &[usize],
        action: Action,
    ) -> Self {
        Self {
            matcher: Box::new(matcher),
            nth: nth.to_vec(),
            action,
            matched: AtomicUsize::new(0),
        }
    }
}

/// The running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    pub endpoint: String,
    rules: Arc<Vec<Rule>>,
}

impl FaultProxy {
    pub async fn start(upstream: String, rules: Vec<Rule>) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules = Arc::new(rules);
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let task_rules = rules.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rules, client, upstream) =
                    (task_rules.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (rules, client, upstream) =
                            (rules.clone(), client.clone(), upstream.clone());
                        async move { Ok::<_, Infallible>(answer(req, &rules, &client, &upstream).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { endpoint, rules }
    }

    /// How many requests rule `i` matched.
    pub fn matched(&self, i: usize) -> usize {
        self.rules[i].matched.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    rules: &[Rule],
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let action = {
        let seen = Seen {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
        };
        rules.iter().find_map(|rule| {
            if !(rule.matcher)(&seen) {
                return None;
            }
            let n = rule.matched.fetch_add(1, Ordering::SeqCst) + 1;
            rule.nth.contains(&n).then(|| rule.action.clone())
        })
    };
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    match &action {
        Some(Action::Before(canned)) => return canned_response(canned),
        Some(Action::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Action::Hang) => std::future::pending::<()>().await,
        _ => {}
    }
    let mut forward = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let upstream_answer = client.request(forward.body(Full::new(body)).unwrap()).await;
    if let Some(Action::After(canned)) = &action {
        // The effect happened; drain the real answer and lose it.
        if let Ok(r) = upstream_answer {
            let _ = r.into_body().collect().await;
        }
        return canned_response(canned);
    }
    match upstream_answer {
        Ok(r) => {
            let (parts, body) = r.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut answer = Response::builder().status(parts.status);
            for (name, value) in &parts.headers {
                // The body is re-sent whole (a HEAD answer keeps the object's Content-Length).
                if name != hyper::header::TRANSFER_ENCODING {
                    answer = answer.header(name, value);
                }
            }
            answer.body(Full::new(bytes)).unwrap()
        }
        Err(e) => canned_response(&Canned {
            status: 502,
            headers: vec![],
            body: format!("proxy: upstream failed: {e}"),
        }),
    }
}

fn canned_response(canned: &Canned) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(canned.status);
    for (name, value) in &canned.headers {
        r = r.header(*name, value);
    }
    r.body(Full::new(Bytes::from(canned.body.clone()))).unwrap()
}
