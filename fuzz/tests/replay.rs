//! Each fuzz harness over real-format inputs made here (a sealed request, an
//! RA-TLS certificate, frames, configs, cells from a real chain, a chat
//! export), their byte-level mutations, and every file in `seeds/<target>/`
//! (where inputs that once crashed a target are kept). `write_seeds`
//! (ignored) writes the made inputs there as libFuzzer's starting corpus.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_protocol::tls::Identity;
use cocoon_protocol::{ChatMessage, Frame, GenerateRequest, Hello, Input, RequestBody, Role};

fn made_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Frames and a hello.
    let request = GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![ChatMessage::new("user", "hello")]),
        params: Default::default(),
    };
    let worker = Identity::generate().unwrap();
    let key = cocoon_protocol::SealingKey::generate();
    let (sealed, _) = cocoon_protocol::sealed::seal(
        &request,
        &[cocoon_protocol::SealTo::at_base_price(
            worker.fingerprint(),
            key.public(),
        )],
        1,
    )
    .unwrap();
    let frame = Frame::Request {
        id: 7,
        body: RequestBody::Generate(sealed.clone()),
    };
    seeds.push((
        "wire_frame",
        cocoon_protocol::encode_frame(&frame).unwrap().to_vec(),
    ));
    let hello = Hello {
        role: Role::Client,
        software: "seed".into(),
    };
    seeds.push((
        "wire_frame",
        cocoon_protocol::write_hello(&hello).unwrap().to_vec(),
    ));
    seeds.push(("sealed_request", postcard::to_allocvec(&sealed).unwrap()));
    // A certificate with simulated evidence in its extension, and the evidence.
    let attested = Identity::generate()
        .unwrap()
        .with_attester(Arc::new(cocoon_attestation::simulated::SimulatedTee::new()));
    seeds.push((
        "ra_tls_evidence",
        attested.issue_certificate().unwrap().to_vec(),
    ));
    let evidence = attested.evidence(&[1; 64]).unwrap().unwrap();
    seeds.push(("ra_tls_evidence", evidence.to_bytes()));
    // API bodies.
    seeds.push((
        "openai_request",
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"stream":true,"cocoon":{"sort":"latency"}}"#.to_vec(),
    ));
    seeds.push((
        "openai_request",
        br#"{"model":"m","prompt":"once","stop":["\n"]}"#.to_vec(),
    ));
    // The example configurations.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["client", "proxy", "worker"] {
        let path = root.join(format!("config/{name}.example.toml"));
        seeds.push(("config_toml", std::fs::read(path).unwrap()));
    }
    // Cells: a snake string, a registry dictionary from the real contract.
    use tycho_types::boc::Boc;
    seeds.push((
        "ton_cells",
        Boc::encode(cocoon_chain::snake("127.0.0.1:9100").unwrap()),
    ));
    seeds.push(("ton_cells", registry_boc()));
    seeds.push(("ton_cells", br#"{"ok":true,"result":[]}"#.to_vec()));
    // A chat export.
    seeds.push((
        "chat_export",
        br#"{"name":"A","type":"personal_chat","id":1,"messages":[{"id":1,"type":"message","date":"2024-01-01T00:00:00","from":"A","from_id":"user1","text":["x ",{"type":"bold","text":"y"}],"reply_to_message_id":1},{"id":2,"type":"service","date":"2024-01-01T00:00:01","actor":"B","action":"pin_message","text":""}]}"#.to_vec(),
    ));
    // Real recorded GPU evidence: an H100's SPDM report and a driver RIM.
    let nvidia = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/nvidia");
    let report = std::fs::read_to_string(nvidia.join("hopperAttestationReport.txt")).unwrap();
    seeds.push(("gpu_evidence", hex::decode(report.trim()).unwrap()));
    seeds.push((
        "gpu_evidence",
        std::fs::read(nvidia.join("Driver_RIM_test_no_gpu.swidtag")).unwrap(),
    ));
    seeds
}

/// The root contract's proxy registry after one `SetProxy`, as a BOC.
fn registry_boc() -> Vec<u8> {
    use cocoon_chain::Chain;
    let proxy_key = [9u8; 32];
    let ton = cocoon_ton_devnet::TonDevnet::start(
        &cocoon_chain::pricing::default_prices(),
        1_000_000_000,
        proxy_key,
        [7u8; 32],
    )
    .unwrap();
    ton.register_proxy(
        &ton.proxy_contract,
        &ton.proxy_key,
        6,
        Some("127.0.0.1:9100"),
    )
    .unwrap();
    let chain = ton.embedded();
    let rt = tokio_runtime();
    let stack = rt
        .block_on(chain.get(&ton.root, "get_proxies", &[]))
        .unwrap();
    let cell = stack[0].as_cell().unwrap().clone();
    tycho_types::boc::Boc::encode(cell)
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn harness(target: &str) -> cocoon_fuzz::Harness {
    cocoon_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap()
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

#[test]
fn every_harness_takes_its_seeds_and_their_mutations() {
    let seeds = made_seeds();
    for (target, _) in cocoon_fuzz::TARGETS {
        assert!(
            seeds.iter().any(|(t, _)| t == target),
            "no seed for {target}"
        );
    }
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, seed) in &seeds {
        let run = harness(target);
        run(seed);
        // Truncations, flipped bytes, inserted bytes: what a fuzzer tries first.
        for cut in 0..seed.len().min(64) {
            run(&seed[..cut]);
        }
        for _ in 0..300 {
            let mut bytes = seed.clone();
            for _ in 0..=(next() % 4) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes.insert(at, next() as u8),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            run(&bytes);
        }
    }
}

#[test]
fn kept_inputs_replay() {
    let mut replayed = 0;
    for (target, run) in cocoon_fuzz::TARGETS {
        let dir = seeds_dir().join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no kept inputs under {}",
        seeds_dir().display()
    );
}

/// `cargo test -p cocoon-fuzz -- --ignored write_seeds`: write the made
/// seeds as libFuzzer's starting corpus.
#[test]
#[ignore]
fn write_seeds() {
    for (i, (target, seed)) in made_seeds().into_iter().enumerate() {
        let dir = seeds_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("made-{i}")), seed).unwrap();
    }
}
