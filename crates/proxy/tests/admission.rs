//! Who may connect to a proxy: only pinned keys, and only in the role they are
//! pinned for. Real TLS on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::{
    dial_once, Announce, Connection, DialSettings, Event, Handler, Hello, ModelOffer, MuxOptions,
    ProxyEndpoint, RequestBody, Role, SealingKey, WorkerKey, DEFAULT_MAX_FRAME_BYTES,
};
use cocoon_proxy::ProxySettings;
use futures::stream::{self, BoxStream, StreamExt};

struct Idle;
impl Handler for Idle {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

struct Net {
    endpoint: ProxyEndpoint,
    proxy: cocoon_proxy::ProxyHandle,
    client: Arc<Identity>,
    worker: Arc<Identity>,
}

async fn start() -> Net {
    start_with(MuxOptions::default()).await
}

async fn start_with(mux: MuxOptions) -> Net {
    start_gated(mux, cocoon_proxy::GateSettings::default()).await
}

async fn start_gated(mux: MuxOptions, gate: cocoon_proxy::GateSettings) -> Net {
    let (proxy_id, client, worker) = (
        Arc::new(Identity::generate().unwrap()),
        Arc::new(Identity::generate().unwrap()),
        Arc::new(Identity::generate().unwrap()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = ProxyEndpoint {
        address: listener.local_addr().unwrap().to_string(),
        fingerprint: proxy_id.fingerprint(),
    };
    let (proxy, serve) = cocoon_proxy::start(
        listener,
        ProxySettings {
            mux,
            gate,
            ..ProxySettings::pinned(
                proxy_id,
                PinnedKeys::new([client.fingerprint()]),
                PinnedKeys::new([worker.fingerprint()]),
            )
        },
    )
    .unwrap();
    tokio::spawn(serve);
    Net {
        endpoint,
        proxy,
        client,
        worker,
    }
}

/// Settings to dial `proxy` as `identity` in `role`, pinning `proxy`'s key.
fn dial_settings(identity: &Arc<Identity>, proxy: &ProxyEndpoint, role: Role) -> DialSettings {
    DialSettings {
        tls: tls::client_config(
            identity.clone(),
            Arc::new(PinnedKeys::new([proxy.fingerprint])),
        )
        .unwrap(),
        hello: Hello {
            role,
            software: "test".into(),
        },
        handler: Arc::new(Idle),
        mux: MuxOptions::default(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        handshake_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_secs(1),
        watch: None,
    }
}

async fn dial(net: &Net, identity: &Arc<Identity>, role: Role) -> Option<Connection> {
    let settings = dial_settings(identity, &net.endpoint, role);
    let conn = dial_once(&net.endpoint, &settings).await.ok()?;
    // A refused peer may finish the handshake and then be dropped: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (!conn.is_closed()).then_some(conn)
}

#[tokio::test]
async fn pinned_worker_joins_and_announces() {
    let net = start().await;
    let conn = dial(&net, &net.worker.clone(), Role::Worker)
        .await
        .expect("pinned worker admitted");
    conn.announce(announce(Some(key_of(&net.worker)))).unwrap();
    for _ in 0..200 {
        if net.proxy.registry.worker_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(net.proxy.registry.models()[0].workers, 1);
    conn.close("done");
    for _ in 0..300 {
        if net.proxy.registry.worker_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("worker not removed after disconnect");
}

fn announce(key: Option<WorkerKey>) -> Announce {
    Announce {
        models: vec![ModelOffer {
            context_length: None,
            quantization: None,
            features: Default::default(),
            price_coefficient: 1000,
            name: "m".into(),
            max_concurrent: 2,
            weights_sha256: None,
        }],
        key,
        payout: None,
        vouched: None,
    }
}

/// `identity`'s keys, without TEE evidence (this proxy checks none).
fn key_of(identity: &Identity) -> WorkerKey {
    WorkerKey {
        identity: identity.spki().to_vec(),
        sealing_key: SealingKey::generate().public(),
        evidence: None,
        configuration: None,
        anchor: None,
        gpus: Vec::new(),
    }
}

#[tokio::test]
async fn an_announcement_without_keys_or_with_another_identity_is_refused() {
    let net = start().await;
    let stranger = Identity::generate().unwrap();
    for bad in [None, Some(key_of(&stranger))] {
        let conn = dial(&net, &net.worker.clone(), Role::Worker)
            .await
            .expect("pinned worker admitted");
        conn.announce(announce(bad)).unwrap();
        conn.closed().await;
        let reason = conn.close_reason().unwrap_or_default();
        assert!(reason.contains("announcement refused"), "{reason}");
        assert_eq!(net.proxy.registry.worker_count(), 0);
    }
}

#[tokio::test]
async fn unknown_key_is_refused() {
    let net = start().await;
    let stranger = Arc::new(Identity::generate().unwrap());
    assert!(dial(&net, &stranger, Role::Worker).await.is_none());
    assert!(dial(&net, &stranger, Role::Client).await.is_none());
    assert_eq!(net.proxy.registry.worker_count(), 0);
}

#[tokio::test]
async fn keys_are_only_good_for_their_role() {
    let net = start().await;
    assert!(
        dial(&net, &net.client.clone(), Role::Worker)
            .await
            .is_none(),
        "client key as worker"
    );
    assert!(
        dial(&net, &net.worker.clone(), Role::Client)
            .await
            .is_none(),
        "worker key as client"
    );
    assert!(
        dial(&net, &net.client.clone(), Role::Proxy).await.is_none(),
        "client key as proxy"
    );
    assert!(
        dial(&net, &net.client.clone(), Role::Client)
            .await
            .is_some(),
        "client key as client"
    );
}

#[tokio::test]
async fn wrong_proxy_key_is_refused_by_the_dialler() {
    let net = start().await;
    let mut wrong = net.endpoint.clone();
    wrong.fingerprint = Identity::generate().unwrap().fingerprint();
    let settings = dial_settings(&net.worker, &wrong, Role::Worker);
    assert!(dial_once(&wrong, &settings).await.is_err());
}

/// A TCP relay on loopback that can be frozen: while frozen it forwards no
/// byte either way (a network partition that leaves the sockets open).
async fn relay(to: String, frozen: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, frozen.clone()));
            tokio::spawn(pipe(ro, wi, frozen.clone()));
        }
    });
    address
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_worker_that_misses_its_heartbeats_is_evicted_and_readmitted_when_it_comes_back() {
    // The proxy pings every 100 ms and drops a peer silent for 600 ms.
    let beat = MuxOptions {
        keepalive_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        ..MuxOptions::default()
    };
    let net = start_with(beat.clone()).await;
    let frozen = Arc::new(AtomicBool::new(false));
    let through = ProxyEndpoint {
        address: relay(net.endpoint.address.clone(), frozen.clone()).await,
        fingerprint: net.endpoint.fingerprint,
    };
    let mut settings = dial_settings(&net.worker, &through, Role::Worker);
    settings.mux = beat;
    settings.max_backoff = Duration::from_millis(200);
    let key = key_of(&net.worker);
    let stop = tokio_util::sync::CancellationToken::new();
    let _conn = cocoon_protocol::keep_connected(through, settings, stop.clone(), move |conn| {
        conn.announce(announce(Some(key.clone()))).unwrap();
    });
    let registry = net.proxy.registry.clone();
    wait_for("admitted", Duration::from_secs(5), || {
        registry.worker_count() == 1
    })
    .await;

    frozen.store(true, Ordering::Release);
    let evicted = wait_for("evicted", Duration::from_secs(5), || {
        registry.worker_count() == 0
    })
    .await;
    println!("evicted {evicted:?} after the network froze");
    assert!(
        evicted >= Duration::from_millis(400),
        "evicted too early: {evicted:?}"
    );

    frozen.store(false, Ordering::Release);
    let back = wait_for("re-admitted", Duration::from_secs(10), || {
        registry.worker_count() == 1
    })
    .await;
    println!("re-admitted {back:?} after the network came back");
    stop.cancel();
}

/// A flood of half-finished connections from one address (they connect and
/// never start a handshake, holding the proxy's handshake timeout each):
/// past the per-source limit they are closed at once, and a client node from
/// another address still gets in. Without the gate each one was held for
/// the whole handshake timeout (10 s).
#[tokio::test]
async fn a_flood_of_half_finished_connections_is_turned_away_while_others_get_in() {
    let net = start_gated(
        MuxOptions::default(),
        cocoon_proxy::GateSettings {
            per_source_in_flight: 8,
            ..Default::default()
        },
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(
            socket
                .connect(net.endpoint.address.parse().unwrap())
                .await
                .unwrap(),
        );
    }
    // The gate sees a connection as it is accepted: wait until all were.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut closed = 0;
    for stream in flood.iter_mut().skip(8) {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Ok(read) = tokio::time::timeout(left, stream.read(&mut byte)).await {
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            closed += 1;
        }
    }
    assert_eq!(closed, 32, "connections past the limit are closed at once");
    assert!(net.proxy.gate.in_flight() <= 8);
    // A client node from 127.0.0.1 is not held up by 127.0.0.2's flood.
    let client = net.client.clone();
    dial(&net, &client, Role::Client)
        .await
        .expect("a pinned client node gets in during the flood");
}

/// While the proxy is busy (here: always, `pow_above_in_flight = 0`) a
/// new connection must prove work before its handshake: client nodes and
/// workers, dialling through Cocoon's dialer, do it and get in; a flood
/// that answers the challenge without doing the work is closed at once,
/// its handshake slot given back, instead of holding the proxy for the
/// 10 s handshake timeout.
#[tokio::test]
async fn while_busy_a_connection_must_prove_work_before_its_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = start_gated(
        MuxOptions::default(),
        cocoon_proxy::GateSettings {
            pow_difficulty: 16,
            pow_above_in_flight: 0,
            ..Default::default()
        },
    )
    .await;
    let (client, worker) = (net.client.clone(), net.worker.clone());
    dial(&net, &client, Role::Client)
        .await
        .expect("a client node proves its work and gets in");
    dial(&net, &worker, Role::Worker)
        .await
        .expect("a worker proves its work and gets in");

    let mut flood = Vec::new();
    for _ in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(&net.endpoint.address)
            .await
            .unwrap();
        let mut challenge = [0u8; 34];
        tcp.read_exact(&mut challenge).await.unwrap();
        assert_eq!((challenge[0], challenge[1]), (1, 16), "a challenge");
        // Any nonce but a solution.
        let seed: [u8; 32] = challenge[2..].try_into().unwrap();
        let guess = (0u64..)
            .find(|n| {
                !cocoon_protocol::pow::Challenge {
                    difficulty: 16,
                    seed,
                }
                .solved_by(*n)
            })
            .unwrap();
        tcp.write_all(&guess.to_le_bytes()).await.unwrap();
        flood.push(tcp);
    }
    for mut tcp in flood {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut byte))
            .await
            .expect("a connection without the work is closed at once, not held for the handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    wait_for("every slot given back", Duration::from_secs(2), || {
        net.proxy.gate.in_flight() == 0
    })
    .await;
}

/// An open proxy takes announcements from any attested worker: one offering
/// more models than any worker serves, or a name longer than any model's,
/// is refused (the registry does not grow with one worker's list); so is a
/// price of 0 or above the network's highest (one just above would wrap
/// around to the cheapest in the proxy's ranking).
#[tokio::test]
async fn an_announcement_offering_too_many_models_huge_names_or_wild_prices_is_refused() {
    let net = start().await;
    let worker = net.worker.clone();
    let conn = dial(&net, &worker, Role::Worker).await.expect("admitted");
    let mut many = announce(Some(key_of(&net.worker)));
    let offer = many.models[0].clone();
    many.models = (0..33)
        .map(|i| ModelOffer {
            name: format!("m{i}"),
            ..offer.clone()
        })
        .collect();
    conn.announce(many).unwrap();
    tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("refused");
    assert!(conn
        .close_reason()
        .unwrap_or_default()
        .contains("at most 32"));
    assert_eq!(net.proxy.registry.worker_count(), 0);

    let conn = dial(&net, &worker, Role::Worker).await.expect("admitted");
    let mut long = announce(Some(key_of(&net.worker)));
    long.models[0].name = "x".repeat(10_000);
    conn.announce(long).unwrap();
    tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("refused");
    assert!(conn
        .close_reason()
        .unwrap_or_default()
        .contains("1 to 128 bytes"));

    for price in [0, cocoon_protocol::MAX_PRICE_COEFFICIENT + 1, 1 << 20] {
        let conn = dial(&net, &worker, Role::Worker).await.expect("admitted");
        let mut wild = announce(Some(key_of(&net.worker)));
        wild.models[0].price_coefficient = price;
        conn.announce(wild).unwrap();
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("refused");
        let reason = conn.close_reason().unwrap_or_default();
        assert!(
            reason.contains("price coefficient must be 1 to 1000000"),
            "{reason}"
        );
        assert_eq!(net.proxy.registry.worker_count(), 0);
    }
}
