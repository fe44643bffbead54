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

/// Binds `addr` (before returning, so that the caller knows it listens) and serves the front in a task that
/// forwards to `upstream` (cargo-lambda's `http://HOST:PORT`). The task runs until the process ends.
pub async fn start(addr: SocketAddr, upstream: String) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let upstream = Arc::new(upstream);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    continue;
                }
            };
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move { Ok::<_, Infallible>(answer(req, &client, &upstream).await) }
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

async fn answer(
    req: Request<Incoming>,
    client: &Upstream,
    upstream: &str,
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
