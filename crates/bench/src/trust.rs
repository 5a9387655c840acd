//! Costs of the trust path, printed by `cocoon attest bench` after quote
//! verification: an RA-TLS handshake on loopback (both sides presenting and
//! checking simulated evidence) against the same pinned-key TLS handshake
//! without evidence, sealing a request (a new sealed session, and within
//! one) and its answer, the usage receipt's signature, check and stamp, a
//! worker key's GPU evidence checked (the simulated GPU: every step a real
//! one takes, under simulated roots), and a node's key fetched from a key
//! manager (a new RA-TLS connection each time, as at a node's start).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::Policy;
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::sealed::{seal, SealTo, SenderSessions};
use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::{ChatMessage, GenerateRequest, Input, SamplingParams, SealingKey};

/// p50 and mean of `times`, in microseconds.
fn summary(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    (
        times[times.len() / 2].as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
    )
}

fn print(name: &str, times: &mut [Duration]) {
    let runs = times.len();
    let (p50, mean) = summary(times);
    println!("{name:<48} p50 {p50:8.1} µs, mean {mean:8.1} µs over {runs} runs");
}

/// Mutual TLS handshakes on loopback, timed until the server has checked the
/// client's certificate; with RA-TLS evidence checked both ways, or not.
async fn handshakes(attested: bool, iterations: u32) -> anyhow::Result<Vec<Duration>> {
    // Attested nodes bind a configuration of their role, as real ones do.
    let identity = |role: cocoon_attestation::PeerRole| -> anyhow::Result<Arc<Identity>> {
        let id = Identity::generate()?;
        Ok(Arc::new(if attested {
            let id = id.with_attester(Arc::new(SimulatedTee::new()));
            id.bind_configuration(&cocoon_attestation::Configuration::new(
                role,
                env!("CARGO_PKG_VERSION"),
            ));
            id
        } else {
            id
        }))
    };
    let (server, client) = (
        identity(cocoon_attestation::PeerRole::Proxy)?,
        identity(cocoon_attestation::PeerRole::Worker)?,
    );
    let image = SimulatedTee::measurements().image_hash();
    let check = attested.then(|| {
        Arc::new(AttestationCheck {
            policy: Policy {
                allow_simulated: true,
                worker_images: [image.clone()].into(),
                proxy_images: [image].into(),
                // Dating evidence is a map lookup once a block is known;
                // the handshakes here measure the rest.
                require_fresh_evidence: false,
                ..Policy::default()
            },
            collateral: None,
            verify_at: None,
            anchors: None,
            gpu: None,
            published: None,
        })
    });
    let client_pins = Arc::new(PinnedKeys::new([client.fingerprint()]));
    let server_config = tls::server_config_attested(
        server.clone(),
        client_pins.clone(),
        check.clone(),
        client_pins,
    )?;
    let client_config = tls::client_config_attested(
        client,
        Arc::new(PinnedKeys::new([server.fingerprint()])),
        check,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let server_task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let ok = tls::accept(tcp, &acceptor, Duration::from_secs(5))
                .await
                .is_ok();
            if done_tx.send(ok).await.is_err() {
                return;
            }
        }
    });
    let mut times = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let start = Instant::now();
        let _conn = tls::connect(&addr, client_config.clone(), Duration::from_secs(5)).await?;
        let accepted = done_rx.recv().await.unwrap_or(false);
        anyhow::ensure!(accepted, "the server refused the handshake");
        times.push(start.elapsed());
    }
    server_task.abort();
    Ok(times)
}

fn request() -> GenerateRequest {
    GenerateRequest {
        model: "smollm2-135m-instruct".into(),
        input: Input::Chat(vec![
            ChatMessage::new("system", "You summarise chats in their own language."),
            ChatMessage::new(
                "user",
                "Summarise: ".to_string() + &"Alice: see you at 5? Bob: yes. ".repeat(30),
            ),
        ]),
        params: SamplingParams {
            max_tokens: Some(256),
            temperature: Some(0.7),
            ..Default::default()
        },
    }
}

/// Print every figure.
pub async fn run(iterations: u32) -> anyhow::Result<()> {
    let mut plain = handshakes(false, iterations).await?;
    let mut attested = handshakes(true, iterations).await?;
    print("mutual TLS 1.3 handshake, pinned keys", &mut plain);
    print(
        "RA-TLS handshake, simulated evidence both ways",
        &mut attested,
    );

    let request = request();
    let workers: Vec<(Identity, SealingKey)> = (0..4)
        .map(|_| Ok((Identity::generate()?, SealingKey::generate())))
        .collect::<anyhow::Result<_>>()?;
    let to: Vec<_> = workers
        .iter()
        .map(|(id, key)| SealTo::at_base_price(id.fingerprint(), key.public()))
        .collect();
    for recipients in [1, 4] {
        // "new session": one per request (one HPKE encapsulation per
        // recipient; the worker rebuilds the session with one
        // Diffie-Hellman). "in session": the steady state, HKDF and
        // ChaCha20-Poly1305 only.
        for (label, sessions) in [
            ("new session", None),
            ("in session", Some(SenderSessions::new())),
        ] {
            let seal_now = || match &sessions {
                None => seal(&request, &to[..recipients], 0),
                Some(sessions) => sessions.seal(&request, &to[..recipients], 0),
            };
            let (id, key) = &workers[0];
            key.open(&id.fingerprint(), &seal_now()?.0)?;
            let mut sealing = Vec::new();
            let mut opening = Vec::new();
            for _ in 0..iterations {
                let start = Instant::now();
                let (sealed, _) = seal_now()?;
                sealing.push(start.elapsed());
                let start = Instant::now();
                std::hint::black_box(key.open(&id.fingerprint(), &sealed)?);
                opening.push(start.elapsed());
            }
            print(
                &format!("{label}: seal of a 1 KB chat to {recipients} worker(s)"),
                &mut sealing,
            );
            print(
                &format!("{label}: open at the worker ({recipients} recipient(s))"),
                &mut opening,
            );
        }
    }
    let (sealed, mut opener) = seal(&request, &to[..1], 0)?;
    let (_, mut sealer) = workers[0].1.open(&workers[0].0.fingerprint(), &sealed)?;
    let mut chunks = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let chunk = sealer.seal(" token", 1);
        std::hint::black_box(opener.open(&chunk)?);
        chunks.push(start.elapsed());
    }
    print("answer chunk seal + open", &mut chunks);
    padding_costs(&request, &to[..1], &workers[0], iterations)?;
    gpu_evidence(iterations)?;
    key_manager_fetch(iterations).await?;

    let worker = &workers[0].0;
    let receipt = cocoon_protocol::Receipt {
        price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
        request_id: sealed.header.request_id,
        model: request.model.clone(),
        model_sha256: Some("ab".repeat(32)),
        usage: cocoon_protocol::Usage::default(),
        finish_reason: cocoon_protocol::FinishReason::Stop,
        chunks: 16,
        worker: worker.fingerprint(),
        issued_at_ms: 0,
        partial: false,
    };
    let mut signing = Vec::new();
    let mut verifying = Vec::new();
    let mut stamping = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let signed = cocoon_protocol::SignedReceipt::sign(receipt.clone(), worker);
        signing.push(start.elapsed());
        let start = Instant::now();
        signed.verify(worker.spki())?;
        verifying.push(start.elapsed());
        // A fresh answer each time: a stamp takes the position after the
        // answer's last chunk.
        let (sealed, opener) = seal(&request, &to[..1], 0)?;
        let (_, mut sealer) = workers[0].1.open(&workers[0].0.fingerprint(), &sealed)?;
        let mut stamped = signed.clone();
        stamped.receipt.request_id = sealed.header.request_id;
        stamped.receipt.worker = workers[0].0.fingerprint();
        let start = Instant::now();
        let stamp = sealer.stamp(&stamped);
        opener.check_stamp(&stamped, &stamp)?;
        stamping.push(start.elapsed());
    }
    // The proxy checks receipts that arrive together in one batch: the
    // time per receipt in batches of 16.
    let batch: Vec<cocoon_protocol::SignedReceipt> = (0..16u8)
        .map(|i| {
            let mut r = receipt.clone();
            r.request_id[0] = i;
            cocoon_protocol::SignedReceipt::sign(r, worker)
        })
        .collect();
    let pairs: Vec<_> = batch.iter().map(|r| (r, worker.spki())).collect();
    let mut batched = Vec::new();
    for _ in 0..iterations.div_ceil(16) {
        let start = Instant::now();
        let results = cocoon_protocol::SignedReceipt::verify_many(&pairs);
        let each = start.elapsed() / 16;
        anyhow::ensure!(results.iter().all(Result::is_ok), "a batch failed");
        batched.push(each);
    }
    print("usage receipt signature (worker)", &mut signing);
    print("usage receipt check (proxy, one)", &mut verifying);
    print(
        "usage receipt check (proxy, each of 16 batched)",
        &mut batched,
    );
    print(
        "usage receipt stamp + check (worker, client node)",
        &mut stamping,
    );
    Ok(())
}

/// A worker key's GPU evidence made (the simulated GPU's SPDM report) and
/// checked as a verifier checks it: chain, signature, nonce, two RIMs'
/// chains and XML signatures, every golden value.
fn gpu_evidence(iterations: u32) -> anyhow::Result<()> {
    use cocoon_attestation::gpu::{simulated::SimulatedGpu, GpuReferences};
    let gpu = SimulatedGpu::new();
    let references = GpuReferences::new(None, None).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let nonce = [9u8; 32];
    references
        .verify(&gpu.evidence(&nonce), &nonce, true, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut making, mut checking) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let start = Instant::now();
        let evidence = gpu.evidence(&nonce);
        making.push(start.elapsed());
        let start = Instant::now();
        references
            .verify(&evidence, &nonce, true, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        checking.push(start.elapsed());
    }
    print("GPU evidence made (simulated GPU, 1 report)", &mut making);
    print(
        "GPU evidence checked (per GPU, per worker key)",
        &mut checking,
    );
    Ok(())
}

/// A node's key from a key manager on loopback: connect, RA-TLS with
/// evidence checked both ways, the owner's authorization checked, the key
/// derived and sent.
async fn key_manager_fetch(iterations: u32) -> anyhow::Result<()> {
    use cocoon_attestation::{Configuration, PeerRole};
    use cocoon_key_manager::{fetch_key, Authorization, KeyManager, MasterSecret};
    let image = SimulatedTee::measurements().image_hash();
    let check = Arc::new(AttestationCheck::new(Policy {
        allow_simulated: true,
        proxy_images: [image.clone()].into(),
        key_manager_images: [image].into(),
        require_fresh_evidence: false,
        ..Policy::default()
    }));
    let node = |role| -> anyhow::Result<Arc<Identity>> {
        let identity = Identity::generate()?.with_attester(Arc::new(SimulatedTee::new()));
        identity.bind_configuration(&Configuration::new(role, "bench"));
        Ok(Arc::new(identity))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let km = Arc::new(KeyManager::new(
        MasterSecret::generate(),
        node(PeerRole::KeyManager)?,
        check.clone(),
    ));
    let serving = tokio::spawn(km.serve(listener));
    let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let not_after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let proxy = node(PeerRole::Proxy)?;
    let mut fetching = Vec::new();
    for _ in 0..iterations {
        let authorization =
            Authorization::sign(&owner, PeerRole::Proxy, "identity", "bench", not_after);
        let start = Instant::now();
        fetch_key(&address, proxy.clone(), check.clone(), authorization).await?;
        fetching.push(start.elapsed());
    }
    serving.abort();
    print("key manager: a node's key fetched (RA-TLS)", &mut fetching);
    Ok(())
}

/// What padding and coalescing cost on one answer of 200 tokens (about 4
/// bytes each): bytes on the wire against unpadded per-token chunks, and
/// CPU to seal and open the answer per token and coalesced 8 tokens a
/// chunk (a 5 ms window at ~1,600 tokens/s).
fn padding_costs(
    request: &GenerateRequest,
    to: &[SealTo],
    worker: &(Identity, SealingKey),
    iterations: u32,
) -> anyhow::Result<()> {
    let tokens: Vec<String> = (0..200).map(|i| format!(" w{}", i % 97)).collect();
    let unpadded: usize = tokens.iter().map(|t| t.len() + 16).sum();
    let groups: Vec<String> = tokens.chunks(8).map(|g| g.concat()).collect();
    let mut wire = [0usize; 2];
    let mut cpu = [Vec::new(), Vec::new()];
    for _ in 0..iterations.clamp(1, 200) {
        for (k, pieces) in [&tokens, &groups].into_iter().enumerate() {
            let (sealed, mut opener) = seal(request, to, 0)?;
            let (_, mut sealer) = worker.1.open(&worker.0.fingerprint(), &sealed)?;
            let per = (tokens.len() / pieces.len()) as u32;
            let start = Instant::now();
            let mut bytes = 0;
            for piece in pieces {
                let chunk = sealer.seal(piece, per);
                bytes += chunk.len();
                std::hint::black_box(opener.open(&chunk)?);
            }
            cpu[k].push(start.elapsed());
            wire[k] = bytes;
        }
    }
    println!(
        "answer of 200 tokens on the wire: {unpadded} B unpadded per token (v1), {} B padded per token, {} B padded 8 tokens a chunk",
        wire[0], wire[1]
    );
    print(
        "answer of 200 tokens sealed + opened, per token",
        &mut cpu[0],
    );
    print(
        "answer of 200 tokens sealed + opened, 8 a chunk",
        &mut cpu[1],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The trust costs run end to end (a few iterations): the handshakes
    /// with evidence checked both ways must pass the policy they time.
    #[tokio::test]
    async fn the_trust_costs_run() {
        super::run(3).await.unwrap();
    }
}
