//! [`serve`]: the one way a node serves HTTP (the client node's API, the
//! status pages, the devnet's TON API), with limits a slow or hostile peer
//! cannot get around: at most [`HttpLimits::max_connections`] connections
//! at once (more are closed on accept), request headers read within
//! [`HttpLimits::header_timeout`] (a slowloris sending a byte a second is cut
//! off), and request bodies read within [`HttpLimits::body_timeout`]
//! ([`body_timeout`], a layer for routes that take bodies).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one HTTP listener allows.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most; more are closed as they are accepted.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this (see [`read_body`]).
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve `router` on `listener` under `limits` until `shutdown` resolves;
/// then stop accepting and let open connections finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many HTTP connections; closing a new one");
            drop(tcp);
            continue;
        };
        // Small SSE chunks must leave at once, not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the route allows.
    TooLarge(usize),
    /// Not all there within the timeout.
    TooSlow(Duration),
    /// The connection broke while reading it.
    Broken(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(max) => write!(f, "the request body is larger than {max} bytes"),
            BodyError::TooSlow(limit) => {
                write!(f, "the request body did not arrive within {limit:?}")
            }
            BodyError::Broken(e) => write!(f, "reading the request body failed: {e}"),
        }
    }
}

/// Read `request`'s whole body (at most `max_bytes`, within `timeout`) and
/// give the request back with it, for a middleware in front of routes that
/// take bodies: a peer trickling its body cannot hold a request open.
pub async fn read_body(
    request: Request,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Request, BodyError> {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if length_limit {
                BodyError::TooLarge(max_bytes)
            } else {
                BodyError::Broken(e.to_string())
            })
        }
        Err(_) => Err(BodyError::TooSlow(timeout)),
    }
}

/// [`read_body`] as a middleware answering plain-text 413/408.
pub async fn body_within(
    timeout: Duration,
    max_bytes: usize,
    request: Request,
    next: Next,
) -> Response {
    match read_body(request, timeout, max_bytes).await {
        Ok(request) => next.run(request).await,
        Err(e) => {
            let status = match e {
                BodyError::TooLarge(_) => axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::TooSlow(_) => axum::http::StatusCode::REQUEST_TIMEOUT,
                BodyError::Broken(_) => axum::http::StatusCode::BAD_REQUEST,
            };
            (status, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The attack: many connections that send their headers a byte at a
    /// time (slowloris). Before, each held a connection for as long as it
    /// liked, without limit; now the listener keeps serving others, the
    /// slow ones are cut at the header timeout, and connections past the
    /// cap are closed.
    #[tokio::test]
    async fn slow_and_excess_connections_do_not_stop_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let limits = HttpLimits {
            max_connections: 20,
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_secs(1),
        };
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        let get = || async move {
            let mut tcp = tokio::net::TcpStream::connect(address).await?;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await?;
            let mut answer = String::new();
            tcp.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        // 15 slow connections, each with half a request line.
        let mut slow = Vec::new();
        for _ in 0..15 {
            let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            tcp.write_all(b"GET /hea").await.unwrap();
            slow.push(tcp);
        }
        // Others are served meanwhile.
        assert!(get().await.unwrap().ends_with("ok"));
        // Past the cap, a new connection is closed at once.
        let mut excess = Vec::new();
        for _ in 0..10 {
            excess.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut closed = 0;
        for tcp in &mut excess {
            let mut byte = [0u8; 1];
            if matches!(
                tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut byte)).await,
                Ok(Ok(0)) | Ok(Err(_))
            ) {
                closed += 1;
            }
        }
        assert!(
            closed >= 5,
            "only {closed} of the excess connections were closed"
        );
        drop(excess);
        // The slow ones are cut at the header timeout.
        for tcp in &mut slow {
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "a slow connection was still open after 5 s");
        }
        assert!(get().await.unwrap().ends_with("ok"));
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            )
            .layer(axum::middleware::from_fn(|r, n| {
                body_within(Duration::from_millis(300), 1000, r, n)
            }));
        tokio::spawn(serve(
            listener,
            router,
            HttpLimits::default(),
            std::future::pending(),
        ));
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        tcp.write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly a little",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}
