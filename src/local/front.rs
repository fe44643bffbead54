//! The local cloud's Lambda endpoint: a thin HTTP front before cargo-lambda's Runtime API that answers `Invoke`
//! as Lambda does.
//!
//! cargo-lambda (1.9.2, `watch --only-lambda-apis`) answers a function error with HTTP 500 and the runtime's
//! error document `{"errorType": …, "errorMessage": …}` as the body, and no other sign of it. Lambda answers a
//! synchronous (`RequestResponse`) Invoke whose function failed with 200, the header
//! `X-Amz-Function-Error: Unhandled` and that same document (Lambda API reference, Invoke: `StatusCode` 200,
//! `FunctionError`). Clients tell the two apart: boto3, the AWS CLI and the SDK for Rust read a 500 as a fault
//! of the service and retry it (three or more attempts of a request that can never succeed), then raise a
//! service error instead of handing back the function's answer.
//!
//! So the front forwards every request to cargo-lambda unchanged and rewrites exactly one kind of answer: a 500
//! to `POST /2015-03-31/functions/{name}/invocations` whose body is a JSON object with a string `errorType`
//! becomes 200 with `X-Amz-Function-Error: Unhandled` and the same body ([`rewrite`]). Every other answer (a
//! function's result, cargo-lambda's 404 for an unknown function, a 500 of its own) passes through as it came.
//! Each request is logged with what was answered, so a test can count the attempts a client made.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, TRANSFER_ENCODING},
    service::service_fn,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use serde_json::Value;
use tokio::net::TcpListener;

/// The header Lambda sets on an Invoke answer whose function failed.
pub const FUNCTION_ERROR_HEADER: &str = "x-amz-function-error";

/// How the front answers one upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// As cargo-lambda answered.
    PassThrough,
    /// A function error: 200 with `X-Amz-Function-Error: Unhandled` and the same body.
    FunctionError,
}

/// The Invoke path `/2015-03-31/functions/{name}/invocations`, with a non-empty name.
fn is_invoke(method: &str, path: &str) -> bool {
    method == "POST"
        && path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// What the front does with cargo-lambda's answer `status` + `body` to a `method` `path` request.
pub fn rewrite(method: &str, path: &str, status: u16, body: &[u8]) -> Answer {
    if status != 500 || !is_invoke(method, path) {
        return Answer::PassThrough;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(doc)) if doc.get("errorType").is_some_and(Value::is_string) => {
            Answer::FunctionError
        }
        _ => Answer::PassThrough,
    }
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn log(line: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("[{now}] front: {line}");
}

/// Lambda's asynchronous invocation, as the front plays it: retries after a failed attempt, and where the
/// last failure goes.
#[derive(Debug, Clone, Default)]
pub struct AsyncInvocation {
    /// Retries after the first attempt (a function's `MaximumRetryAttempts`; Lambda's default is 2).
    pub retries: u32,
    /// The pause before each retry (Lambda waits about 1 then 2 minutes; the local cloud seconds).
    pub delay: std::time::Duration,
    /// Function -> its on-failure destination function (template.yaml's `EventInvokeConfig`).
    pub on_failure: std::collections::HashMap<String, String>,
}

/// Binds `addr` (before returning, so that the caller knows it listens) and serves the front in a task that
/// forwards to `upstream` (cargo-lambda's `http://HOST:PORT`). The task runs until the process ends.
///
/// An `Invoke` with `X-Amz-Invocation-Type: Event` is answered 202 at once, as Lambda does, and run in the
/// background: synchronously against cargo-lambda, again after a function error ([`AsyncInvocation`]), and
/// after the last failure its destination record goes to the on-failure function.
pub async fn start(
    addr: SocketAddr,
    upstream: String,
    asynchronous: AsyncInvocation,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let upstream = Arc::new(upstream);
    let asynchronous = Arc::new(asynchronous);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    continue;
                }
            };
            let (client, upstream, asynchronous) =
                (client.clone(), upstream.clone(), asynchronous.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, asynchronous) =
                        (client.clone(), upstream.clone(), asynchronous.clone());
                    async move {
                        Ok::<_, Infallible>(answer(req, &client, &upstream, &asynchronous).await)
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    log(&format!("connection: {e}"));
                }
            });
        }
    });
    Ok(bound)
}

/// The header of an asynchronous Invoke (Lambda API reference, Invoke: `X-Amz-Invocation-Type`).
const INVOCATION_TYPE_HEADER: &str = "x-amz-invocation-type";

/// One synchronous invocation of `function` at cargo-lambda: `Ok(answer)` or `Err(error document or reason)`.
async fn invoke_once(
    client: &Upstream,
    upstream: &str,
    function: &str,
    payload: Bytes,
) -> Result<Bytes, Value> {
    let request = Request::builder()
        .method("POST")
        .uri(format!(
            "{upstream}/2015-03-31/functions/{function}/invocations"
        ))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(payload))
        .map_err(|e| serde_json::json!({"errorType": "Front", "errorMessage": e.to_string()}))?;
    let answer = client.request(request).await.map_err(
        |e| serde_json::json!({"errorType": "Front", "errorMessage": format!("cargo-lambda did not answer: {e}")}),
    )?;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status == 200 {
        Ok(body)
    } else {
        Err(serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::json!({"errorType": "Front", "errorMessage": format!("status {status}: {}", String::from_utf8_lossy(&body))})
        }))
    }
}

/// An asynchronous invocation: attempts, then the on-failure destination's record (the shape of the AWS Lambda
/// developer guide's "Capturing records of Lambda asynchronous invocations").
async fn run_async(
    client: Upstream,
    upstream: Arc<String>,
    asynchronous: Arc<AsyncInvocation>,
    function: String,
    payload: Bytes,
) {
    let attempts = asynchronous.retries + 1;
    let mut last_error = Value::Null;
    for attempt in 1..=attempts {
        match invoke_once(&client, &upstream, &function, payload.clone()).await {
            Ok(_) => {
                log(&format!(
                    "async {function}: attempt {attempt} of {attempts} succeeded"
                ));
                return;
            }
            Err(error) => {
                log(&format!(
                    "async {function}: attempt {attempt} of {attempts} failed: {error}"
                ));
                last_error = error;
            }
        }
        if attempt < attempts {
            tokio::time::sleep(asynchronous.delay * attempt).await;
        }
    }
    let Some(destination) = asynchronous.on_failure.get(&function) else {
        log(&format!(
            "async {function}: retries exhausted, no on-failure destination: event dropped"
        ));
        return;
    };
    let record = serde_json::json!({
        "version": "1.0",
        "timestamp": crate::builder::create_date(std::time::SystemTime::now()),
        "requestContext": {
            "requestId": format!("local-{}", std::process::id()),
            "functionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}:$LATEST"),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": serde_json::from_slice::<Value>(&payload).unwrap_or(Value::Null),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": last_error,
    });
    let sent = invoke_once(
        &client,
        &upstream,
        destination,
        Bytes::from(record.to_string()),
    )
    .await;
    log(&format!(
        "async {function}: retries exhausted; on-failure destination {destination}: {}",
        match sent {
            Ok(answer) => String::from_utf8_lossy(&answer).into_owned(),
            Err(e) => format!("failed: {e}"),
        }
    ));
}

async fn answer(
    req: Request<Incoming>,
    client: &Upstream,
    upstream: &Arc<String>,
    asynchronous: &Arc<AsyncInvocation>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let event = parts
        .headers
        .get(INVOCATION_TYPE_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Event"));
    if event && is_invoke(&method, &path) {
        let function = path
            .trim_start_matches("/2015-03-31/functions/")
            .trim_end_matches("/invocations")
            .to_owned();
        log(&format!(
            "{method} {path}: asynchronous (Event), answered 202"
        ));
        tokio::spawn(run_async(
            client.clone(),
            upstream.clone(),
            asynchronous.clone(),
            function,
            body,
        ));
        let mut out = Response::new(Full::new(Bytes::new()));
        *out.status_mut() = StatusCode::ACCEPTED;
        return out;
    }
    let mut forward = Request::builder()
        .method(parts.method)
        .uri(format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        // The client sets Host for cargo-lambda's address; the body goes whole, with its own length.
        if name != HOST && name != TRANSFER_ENCODING && name != CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let request = match forward.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("forwarding: {e}")),
    };
    let upstream_answer = match client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            log(&format!(
                "{method} {path}: cargo-lambda did not answer: {e}"
            ));
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("the local cloud's front: cargo-lambda did not answer: {e}"),
            );
        }
    };
    let (parts, body) = upstream_answer.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("the local cloud's front: reading cargo-lambda's answer: {e}"),
            );
        }
    };
    let mut out = Response::new(Full::new(bytes.clone()));
    match rewrite(&method, &path, parts.status.as_u16(), &bytes) {
        Answer::PassThrough => {
            log(&format!("{method} {path}: {}", parts.status.as_u16()));
            *out.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if name != TRANSFER_ENCODING && name != CONTENT_LENGTH {
                    out.headers_mut().append(name, value.clone());
                }
            }
        }
        Answer::FunctionError => {
            log(&format!(
                "{method} {path}: function error (cargo-lambda 500), answered 200 with X-Amz-Function-Error: Unhandled"
            ));
            let headers = out.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(FUNCTION_ERROR_HEADER, HeaderValue::from_static("Unhandled"));
            headers.insert(
                "x-amz-executed-version",
                HeaderValue::from_static("$LATEST"),
            );
        }
    }
    out
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVOKE: &str = "/2015-03-31/functions/submit-build/invocations";

    /// An asynchronous Invoke is answered 202 at once; the function is tried 1 + `retries` times, and its last
    /// error goes to the on-failure function in Lambda's destination record, with the event in it.
    #[tokio::test]
    async fn an_event_invoke_is_accepted_retried_then_sent_to_its_destination() {
        use std::sync::Mutex;
        // cargo-lambda's stand-in: `fast` always fails, `dest` records what it gets.
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", listener.local_addr().unwrap());
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            log.lock().unwrap().push((path.clone(), event));
                            let mut r = Response::new(Full::new(Bytes::from(
                                r#"{"errorType":"Runtime.ExitError","errorMessage":"signal: killed"}"#,
                            )));
                            if path.contains("/fast/") {
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            } else {
                                *r.body_mut() = Full::new(Bytes::from_static(b"{}"));
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let asynchronous = AsyncInvocation {
            retries: 1,
            delay: std::time::Duration::from_millis(10),
            on_failure: [("fast".to_owned(), "dest".to_owned())].into(),
        };
        let front = start("127.0.0.1:0".parse().unwrap(), upstream, asynchronous)
            .await
            .unwrap();
        let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
        let request = Request::builder()
            .method("POST")
            .uri(format!(
                "http://{front}/2015-03-31/functions/fast/invocations"
            ))
            .header("X-Amz-Invocation-Type", "Event")
            .body(Full::new(Bytes::from(r#"{"build":1}"#)))
            .unwrap();
        let answer = client.request(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let seen = seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/2015-03-31/functions/fast/invocations",
                "/2015-03-31/functions/fast/invocations",
                "/2015-03-31/functions/dest/invocations"
            ]
        );
        assert_eq!(seen[0].1, serde_json::json!({"build": 1}));
        let record = &seen[2].1;
        assert_eq!(record["requestPayload"], serde_json::json!({"build": 1}));
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
        assert_eq!(record["responsePayload"]["errorType"], "Runtime.ExitError");
    }

    #[test]
    fn only_a_function_error_of_an_invoke_is_rewritten() {
        let error = br#"{"errorType":"InvalidRequest","errorMessage":"runtime: unknown runtime"}"#;
        let cases: &[(&str, &str, u16, &[u8], Answer)] = &[
            ("POST", INVOKE, 500, error, Answer::FunctionError),
            // A function's own answer, whatever it holds.
            ("POST", INVOKE, 200, error, Answer::PassThrough),
            (
                "POST",
                INVOKE,
                200,
                br#"{"status":"submitted"}"#,
                Answer::PassThrough,
            ),
            // cargo-lambda's own failures are not the function's.
            ("POST", INVOKE, 500, b"internal error", Answer::PassThrough),
            (
                "POST",
                INVOKE,
                500,
                br#"{"detail":"boom"}"#,
                Answer::PassThrough,
            ),
            (
                "POST",
                INVOKE,
                500,
                br#"{"errorType":3}"#,
                Answer::PassThrough,
            ),
            (
                "POST",
                INVOKE,
                500,
                br#"["errorType"]"#,
                Answer::PassThrough,
            ),
            (
                "POST",
                "/2015-03-31/functions/nosuch/invocations",
                404,
                br#"{"title":"Missing function"}"#,
                Answer::PassThrough,
            ),
            // Not Invoke.
            ("GET", INVOKE, 500, error, Answer::PassThrough),
            (
                "POST",
                "/2015-03-31/functions//invocations",
                500,
                error,
                Answer::PassThrough,
            ),
            (
                "POST",
                "/2015-03-31/functions/a/b/invocations",
                500,
                error,
                Answer::PassThrough,
            ),
            (
                "POST",
                "/.rt/submit-build/2018-06-01/runtime/invocation/next",
                500,
                error,
                Answer::PassThrough,
            ),
        ];
        for (method, path, status, body, want) in cases {
            assert_eq!(
                rewrite(method, path, *status, body),
                *want,
                "{method} {path} {status} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
