//! Dishonest parties for attack tests, in one place so that every attack
//! test plays the same attacker instead of writing its own.
//!
//! [`RelayProxy`] is a proxy operator who runs modified software: client
//! nodes dial it as their proxy (it holds a key they pin and evidence their
//! policy accepts), and it passes their requests on to an honest proxy as
//! that client, letting a [`Script`] read, rewrite, drop, duplicate or inject
//! anything on the way. What the network promises is what holds whatever
//! the script does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::{
    dial_once, handshake, Connection, DialSettings, ErrorKind, Event, Handler, Hello, MuxOptions,
    ProxyEndpoint, RequestBody, Role, WireError, DEFAULT_MAX_FRAME_BYTES,
};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const HANDSHAKE: Duration = Duration::from_secs(5);

/// A node key with a simulated TEE, as the devnet's nodes have: a relay's
/// evidence is as good as theirs under the devnet's policy.
pub fn simulated_identity() -> anyhow::Result<Arc<Identity>> {
    crate::devnet::simulated_identity(None, "")
}

/// What a dishonest proxy does with each request a client node sends it.
pub trait Script: Send + Sync + 'static {
    /// The answer the client node gets for `body`; `upstream` is the relay's
    /// connection to the honest proxy, as the client. By default: forwarded
    /// unchanged, both ways.
    fn serve(&self, body: RequestBody, upstream: Connection) -> BoxStream<'static, Event> {
        forward(upstream, body)
    }
}

/// An honest relay: everything forwarded unchanged.
pub struct Honest;
impl Script for Honest {}

/// Send `body` upstream and stream its answer back.
pub fn forward(upstream: Connection, body: RequestBody) -> BoxStream<'static, Event> {
    stream::once(async move {
        match upstream.request(body).await {
            Ok(answer) => answer.boxed(),
            Err(e) => stream::iter([Event::Error(WireError::new(
                ErrorKind::Upstream,
                e.to_string(),
            ))])
            .boxed(),
        }
    })
    .flatten()
    .boxed()
}

/// The whole answer to `body` from upstream, collected.
pub async fn ask_all(upstream: &Connection, body: RequestBody) -> Vec<Event> {
    forward(upstream.clone(), body).collect().await
}

/// A dishonest proxy in front of an honest one.
pub struct RelayProxy {
    /// Where client nodes dial it, and the key they pin.
    pub endpoint: ProxyEndpoint,
    accept: JoinHandle<()>,
    upstream: Connection,
}

impl RelayProxy {
    /// Listen on a loopback port as `identity` (a key and evidence of the
    /// relay's own), admitting client nodes with `client`'s key, and pass
    /// their requests through `script` to the proxy at `upstream`, dialled
    /// as `client`.
    pub async fn start(
        identity: Arc<Identity>,
        client: Arc<Identity>,
        upstream: &ProxyEndpoint,
        script: Arc<dyn Script>,
    ) -> anyhow::Result<RelayProxy> {
        // The relay's simulated TEE vouches for whatever it is told: a
        // proxy's configuration, as an honest proxy's would.
        if identity.configuration().is_none() {
            identity.bind_configuration(&cocoon_attestation::Configuration::new(
                cocoon_attestation::PeerRole::Proxy,
                env!("CARGO_PKG_VERSION"),
            ));
        }
        let settings = DialSettings {
            tls: tls::client_config(
                client.clone(),
                Arc::new(PinnedKeys::new([upstream.fingerprint])),
            )?,
            hello: Hello {
                role: Role::Client,
                software: "relay".into(),
            },
            handler: Arc::new(Nothing),
            mux: MuxOptions::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: HANDSHAKE,
            max_backoff: Duration::from_secs(1),
            watch: None,
        };
        let upstream = dial_once(upstream, &settings)
            .await
            .context("the relay dialling the honest proxy")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(
            identity.clone(),
            Arc::new(PinnedKeys::new([client.fingerprint()])),
        )?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address: SocketAddr = listener.local_addr()?;
        let handler: Arc<dyn Handler> = Arc::new(Relay {
            script,
            upstream: upstream.clone(),
        });
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok((tls, key)) = tls::accept(tcp, &acceptor, HANDSHAKE).await else {
                        return;
                    };
                    let ours = Hello {
                        role: Role::Proxy,
                        software: "relay".into(),
                    };
                    let Ok((framed, peer)) =
                        handshake(tls, &ours, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE).await
                    else {
                        return;
                    };
                    let conn =
                        Connection::spawn(framed, peer, Some(key), handler, MuxOptions::default());
                    conn.closed().await;
                });
            }
        });
        Ok(RelayProxy {
            endpoint: ProxyEndpoint {
                address: address.to_string(),
                fingerprint: identity.fingerprint(),
            },
            accept,
            upstream,
        })
    }

    /// A relay with a simulated TEE of its own in front of `net`'s first
    /// proxy, admitting `net`'s client key (what every attack test starts
    /// with).
    pub async fn in_front_of(
        net: &crate::Devnet,
        script: Arc<dyn Script>,
    ) -> anyhow::Result<RelayProxy> {
        // Its evidence is dated by the devnet's chain, as an honest
        // proxy's is: what the relay's host cannot do is the point.
        let identity = simulated_identity()?;
        let anchors = cocoon_chain::anchors::block_anchors(Arc::new(cocoon_chain::TonHttp::new(
            &net.ton_api_url,
            None,
        )?));
        anchors.ready().await.map_err(anyhow::Error::msg)?;
        identity.anchor_to(anchors);
        Self::start(
            identity,
            net.client_identity.clone(),
            net.proxy_endpoint(),
            script,
        )
        .await
    }

    /// The relay's own connection to the honest proxy.
    pub fn upstream(&self) -> &Connection {
        &self.upstream
    }
}

impl Drop for RelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.upstream.close("relay stopped");
    }
}

struct Relay {
    script: Arc<dyn Script>,
    upstream: Connection,
}

impl Handler for Relay {
    fn serve(&self, _: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        self.script.serve(body, self.upstream.clone())
    }
}

/// The relay serves nothing to the honest proxy.
struct Nothing;
impl Handler for Nothing {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

/// A GPU owner's inference server that lies about usage: an
/// OpenAI-compatible endpoint (`/v1/chat/completions`, streamed) that answers
/// `words` words and reports `claimed` completion and prompt tokens. A worker
/// with the `openai-http` engine pointed at it signs what it reports.
pub struct LyingEngine {
    /// Base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    task: JoinHandle<()>,
}

impl LyingEngine {
    pub async fn start(words: usize, claimed: cocoon_protocol::Usage) -> anyhow::Result<Self> {
        use axum::response::sse::{Event as Sse, Sse as SseBody};
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let answer = move || async move {
            let chunk = |text: &str| {
                serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            };
            let mut events: Vec<serde_json::Value> =
                (0..words).map(|i| chunk(&format!("w{i} "))).collect();
            events.push(serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
            events.push(serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [], "usage": {"prompt_tokens": claimed.prompt_tokens,
                "completion_tokens": claimed.completion_tokens,
                "total_tokens": claimed.prompt_tokens + claimed.completion_tokens}}));
            let stream = stream::iter(
                events
                    .into_iter()
                    .map(|v| Ok::<_, std::convert::Infallible>(Sse::default().data(v.to_string())))
                    .chain([Ok(Sse::default().data("[DONE]"))]),
            );
            SseBody::new(stream)
        };
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
        Ok(LyingEngine {
            base_url,
            task: serve_in_background(listener, app),
        })
    }
}

impl Drop for LyingEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An inference server whose errors repeat the request (as real ones do:
/// "prompt too long: <the prompt>"): answers every chat completion with
/// HTTP 400 and the request's body in its error message. Behind a worker's
/// `openai-http` engine it shows what an engine's error text carries.
pub struct EchoingErrors {
    /// Base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    task: JoinHandle<()>,
}

impl EchoingErrors {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|body: String| async move {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(
                        serde_json::json!({"error": {"message": format!("cannot serve {body}")}}),
                    ),
                )
            }),
        );
        Ok(EchoingErrors {
            base_url,
            task: serve_in_background(listener, app),
        })
    }
}

impl Drop for EchoingErrors {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve `app` on `listener` until the task is aborted.
fn serve_in_background(listener: TcpListener, app: axum::Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// A TON HTTP API that lies: it passes every call on to an honest endpoint
/// (`upstream`, e.g. the devnet's) and answers the same, except that a
/// get-method named `method` comes back with its first stack entry (an
/// integer: the root's price per token in `get_prices`, a channel's
/// proxy...) multiplied by `factor`. As the endpoint a node reads through,
/// it is a compromised or self-interested API provider.
pub struct LyingTonApi {
    /// Base URL, e.g. `http://127.0.0.1:PORT/api/v2`.
    pub url: String,
    task: JoinHandle<()>,
}

impl LyingTonApi {
    pub async fn start(upstream: &str, method: &str, factor: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/api/v2", listener.local_addr()?);
        let upstream = format!("{upstream}/jsonRPC");
        let method = method.to_string();
        let http = reqwest::Client::new();
        let relay = move |axum::Json(call): axum::Json<serde_json::Value>| {
            let (http, upstream, method) = (http.clone(), upstream.clone(), method.clone());
            async move {
                let answer = http.post(&upstream).json(&call).send().await;
                let mut answer: serde_json::Value = match answer {
                    Ok(response) => response.json().await.unwrap_or_default(),
                    Err(e) => serde_json::json!({"ok": false, "error": e.to_string(), "code": 502}),
                };
                let lied_about =
                    call["method"] == "runGetMethod" && call["params"]["method"] == method;
                if lied_about {
                    if let Some(entry) = answer["result"]["stack"].get_mut(0) {
                        let told = entry[1]
                            .as_str()
                            .and_then(|hex| hex.strip_prefix("0x"))
                            .and_then(|hex| u128::from_str_radix(hex, 16).ok());
                        if let Some(n) = told {
                            entry[1] = format!("0x{:x}", n * u128::from(factor)).into();
                        }
                    }
                }
                axum::Json(answer)
            }
        };
        let app = axum::Router::new().route("/api/v2/jsonRPC", axum::routing::post(relay));
        Ok(LyingTonApi {
            url,
            task: serve_in_background(listener, app),
        })
    }
}

impl Drop for LyingTonApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
