use proptest::prelude::*;

use super::*;
use crate::frame::ChatMessage;
use crate::tls::Identity;

const MARKER: &str = "MARKER-7f3a-secret-prompt";

pub(super) fn request() -> GenerateRequest {
    GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![ChatMessage::new(
            "user",
            format!("summarise this: {MARKER}"),
        )]),
        params: SamplingParams {
            max_tokens: Some(16),
            temperature: Some(0.5),
            ..Default::default()
        },
    }
}

pub(super) struct Worker {
    pub id: Fingerprint,
    pub key: SealingKey,
}

pub(super) fn worker() -> Worker {
    Worker {
        id: Identity::generate().unwrap().fingerprint(),
        key: SealingKey::generate(),
    }
}

#[test]
fn each_candidate_opens_the_same_request_and_the_answer_round_trips() {
    let workers = [worker(), worker(), worker()];
    let to: Vec<_> = workers
        .iter()
        .map(|w| crate::SealTo::at_base_price(w.id, w.key.public()))
        .collect();
    let (sealed, mut opener) = seal(&request(), &to, 1_000).unwrap();
    assert_eq!(sealed.header.model, "m");
    assert_eq!(sealed.header.max_tokens, Some(16));
    assert_eq!(sealed.workers().count(), 3);

    for w in &workers {
        let (opened, _) = w.key.open(&w.id, &sealed).unwrap();
        assert_eq!(opened, request());
    }
    // The answer, from the worker that was chosen.
    let (_, mut sealer) = workers[1].key.open(&workers[1].id, &sealed).unwrap();
    assert_eq!(sealer.request_id(), opener.request_id());
    for text in ["Hello", ", ", "wörld ✓", ""] {
        let chunk = sealer.seal(text, 1);
        assert_eq!(text_of(opener.open(&chunk).unwrap()), text);
    }
    assert_eq!(opener.worker(), Some(&workers[1].id));
    assert_eq!(opener.chunks(), 4);
}

/// The attack: a client shows the proxy (which checks its credit and holds
/// the receipt to the header's budget) one answer's `max_tokens` while the
/// sealed request asks the worker for several answers, or for more tokens.
/// The worker refuses to open it: the header must show every answer's.
#[test]
fn a_header_showing_less_than_the_sealed_request_asks_is_refused() {
    let w = worker();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let mut several = request();
    several.params.n = Some(3);
    let honest = SenderSessions::new();
    let (sealed, _) = honest.seal(&several, &to, 1_000).unwrap();
    assert_eq!(
        sealed.header.max_tokens,
        Some(48),
        "16 tokens for each of 3"
    );
    assert_eq!(w.key.open(&w.id, &sealed).unwrap().0, several);
    for shown in [Some(16), Some(47), None] {
        let (lying, _) = honest.seal_showing(&several, shown, &to, 1_000).unwrap();
        assert_eq!(
            w.key.open(&w.id, &lying).unwrap_err(),
            SealError::HeaderMismatch,
            "shown {shown:?}"
        );
    }
    let (lying, _) = honest
        .seal_showing(&request(), Some(8), &to, 1_000)
        .unwrap();
    assert_eq!(
        w.key.open(&w.id, &lying).unwrap_err(),
        SealError::HeaderMismatch
    );
}

/// The attack: a proxy forwards one sealed request to two of its
/// recipients. Under one shared answer key (scheme v1) the two answers were
/// encrypted with the same keystream (identical answers gave identical
/// ciphertexts, different ones their XOR) and the same one-time MAC keys,
/// so chunks of one answer opened in the other. Now each recipient answers
/// under a key of its own.
#[test]
fn two_recipients_of_one_request_answer_under_unrelated_keys() {
    let (a, b) = (worker(), worker());
    let to = [
        crate::SealTo::at_base_price(a.id, a.key.public()),
        crate::SealTo::at_base_price(b.id, b.key.public()),
    ];
    let (sealed, mut opener) = seal(&request(), &to, 0).unwrap();
    let (_, mut sealer_a) = a.key.open(&a.id, &sealed).unwrap();
    let (_, mut sealer_b) = b.key.open(&b.id, &sealed).unwrap();
    let text = "the same answer from both workers";
    let (chunk_a, chunk_b) = (sealer_a.seal(text, 3), sealer_b.seal(text, 3));
    assert_ne!(chunk_a, chunk_b, "two recipients share a keystream");
    let xor: Vec<u8> = chunk_a.iter().zip(&chunk_b).map(|(x, y)| x ^ y).collect();
    assert!(xor[..text.len()].iter().any(|&x| x != 0));
    // The client node opens A's first chunk and is then bound to A: B's
    // chunks, valid under B's key, are refused in A's answer.
    assert_eq!(text_of(opener.open(&chunk_a).unwrap()), text);
    assert_eq!(opener.worker(), Some(&a.id));
    let second_b = sealer_b.seal(" more", 1);
    assert_eq!(opener.open(&second_b), Err(SealError::BadChunk));
    assert_eq!(
        text_of(opener.open(&sealer_a.seal(" more", 1)).unwrap()),
        " more"
    );
}

/// The attack: a proxy rewrites the price the client node listed for a
/// recipient, up (to bill the client more than it agreed to) or down (to
/// pay the worker less than it asked). The price is in the AAD of that
/// recipient's wrapped key: altered, the request does not open, so no
/// worker serves (and signs a receipt for) a price the client did not list.
#[test]
fn a_proxy_cannot_change_the_price_a_client_listed_for_a_worker() {
    let (a, b) = (worker(), worker());
    let to = [
        crate::SealTo {
            price_coefficient: 1200,
            ..crate::SealTo::at_base_price(a.id, a.key.public())
        },
        crate::SealTo::at_base_price(b.id, b.key.public()),
    ];
    let (sealed, _) = seal(&request(), &to, 0).unwrap();
    assert_eq!(sealed.listed_price(&a.id), Some(1200));
    assert_eq!(sealed.listed_price(&b.id), Some(1000));
    a.key
        .open(&a.id, &sealed)
        .expect("opens at the listed price");
    for price in [1201, 1199, 1000, u32::MAX] {
        let mut altered = sealed.clone();
        altered.recipients[0].price_coefficient = price;
        assert_eq!(
            a.key.open(&a.id, &altered).err(),
            Some(SealError::Tampered),
            "a recipient's price was altered to {price} and the request still opened"
        );
    }
    // Nor can one recipient's price be swapped onto another's entry.
    let mut swapped = sealed.clone();
    swapped.recipients[1].price_coefficient = 1200;
    assert_eq!(b.key.open(&b.id, &swapped).err(), Some(SealError::Tampered));
    b.key
        .open(&b.id, &sealed)
        .expect("the other recipient opens at its own price");
}

/// What the proxy sees of an answer: chunk sizes in buckets only, no
/// token counts (they are inside the seal), and an engine's error text
/// sealed too.
#[test]
fn chunk_lengths_and_token_counts_are_hidden() {
    let w = worker();
    let (sealed, mut opener) = seal(
        &request(),
        &[crate::SealTo::at_base_price(w.id, w.key.public())],
        0,
    )
    .unwrap();
    let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
    let short = sealer.seal("a", 1);
    let long = sealer.seal("a much longer piece of text", 7);
    assert_eq!(short.len(), long.len(), "lengths within a bucket differ");
    assert_eq!(short.len(), CHUNK_BUCKET + 16);
    let error = sealer.seal_error(
        crate::ErrorKind::Upstream,
        &format!("the engine choked on {MARKER}"),
    );
    assert!(!error.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    assert_eq!(
        opener.open(&short).unwrap(),
        Piece::Text {
            text: "a".into(),
            tokens: 1
        }
    );
    assert_eq!(
        opener.open(&long).unwrap(),
        Piece::Text {
            text: "a much longer piece of text".into(),
            tokens: 7
        }
    );
    assert!(
        matches!(opener.open(&error).unwrap(), Piece::Error { message, .. } if message.contains(MARKER))
    );
    // Requests are padded too.
    assert_eq!(sealed.ciphertext.len(), REQUEST_BUCKET + 16);
    assert_eq!(padded_len(65 * 1024, 64), 128 * 1024);
    assert_eq!(padded_len(200 * 1024, 64), 256 * 1024);
    assert_eq!(padded_len(300 * 1024, 64), 320 * 1024);
}

#[test]
fn the_proxy_sees_no_plaintext() {
    let w = worker();
    let (sealed, _) = seal(
        &request(),
        &[crate::SealTo::at_base_price(w.id, w.key.public())],
        0,
    )
    .unwrap();
    let wire = postcard::to_allocvec(&sealed).unwrap();
    let needle = MARKER.as_bytes();
    assert!(!wire.windows(needle.len()).any(|win| win == needle));
    // Nor the sampling parameters: 0.5f32 in postcard is its 4 LE bytes.
    let temp = 0.5f32.to_le_bytes();
    assert!(!sealed.ciphertext.is_empty());
    assert!(!wire
        .windows(4)
        .zip(0..)
        .any(|(win, i)| win == temp && i < wire.len() - sealed.ciphertext.len()));
}

#[test]
fn a_request_for_another_worker_or_tampered_with_is_refused() {
    let (a, b) = (worker(), worker());
    let (sealed, _) = seal(
        &request(),
        &[crate::SealTo::at_base_price(a.id, a.key.public())],
        0,
    )
    .unwrap();
    assert_eq!(b.key.open(&b.id, &sealed).unwrap_err(), SealError::NotForUs);
    // b claiming a's slot: its key cannot open it.
    assert_eq!(b.key.open(&a.id, &sealed).unwrap_err(), SealError::Tampered);

    // The proxy rewriting the header: model, budget, id, time.
    let edits: [fn(&mut SealHeader); 4] = [
        |h| h.model = "other".into(),
        |h| h.max_tokens = Some(1),
        |h| h.request_id[0] ^= 1,
        |h| h.sent_at_ms += 1,
    ];
    for edit in edits {
        let mut changed = sealed.clone();
        edit(&mut changed.header);
        assert_eq!(
            a.key.open(&a.id, &changed).unwrap_err(),
            SealError::Tampered
        );
    }
    let mut flipped = sealed.clone();
    flipped.ciphertext[3] ^= 0x40;
    assert_eq!(
        a.key.open(&a.id, &flipped).unwrap_err(),
        SealError::Tampered
    );
    let mut wrapped = sealed.clone();
    wrapped.recipients[0].sealed_key[0] ^= 1;
    assert_eq!(
        a.key.open(&a.id, &wrapped).unwrap_err(),
        SealError::Tampered
    );
    let mut enc = sealed;
    enc.recipients[0].enc.truncate(5);
    assert!(matches!(
        a.key.open(&a.id, &enc).unwrap_err(),
        SealError::Malformed(_)
    ));
}

#[test]
fn answer_chunks_belong_to_one_request() {
    let w = worker();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let (sealed, _) = seal(&request(), &to, 0).unwrap();
    let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
    let chunk = sealer.seal("one", 1);
    // Moved into another request's answer: refused.
    let (_, mut other_opener) = seal(&request(), &to, 0).unwrap();
    assert_eq!(other_opener.open(&chunk), Err(SealError::BadChunk));
    // Injected plaintext: refused.
    let (_, mut own) = seal(&request(), &to, 0).unwrap();
    assert_eq!(own.open(b"plaintext injected"), Err(SealError::BadChunk));
}

#[test]
fn chunk_order_is_enforced() {
    let w = worker();
    let (sealed, mut opener) = seal(
        &request(),
        &[crate::SealTo::at_base_price(w.id, w.key.public())],
        0,
    )
    .unwrap();
    let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
    let _first = sealer.seal("first", 1);
    let second = sealer.seal("second", 1);
    // Second before first: refused; and a dropped chunk makes every later one fail.
    assert_eq!(opener.open(&second), Err(SealError::BadChunk));
    let (sealed2, mut opener2) = seal(
        &request(),
        &[crate::SealTo::at_base_price(w.id, w.key.public())],
        0,
    )
    .unwrap();
    let (_, mut sealer2) = w.key.open(&w.id, &sealed2).unwrap();
    let a = sealer2.seal("a", 1);
    let _b = sealer2.seal("b", 1);
    let c = sealer2.seal("c", 1);
    assert_eq!(text_of(opener2.open(&a).unwrap()), "a");
    assert_eq!(opener2.open(&c), Err(SealError::BadChunk));
}

/// The attack: a proxy alters a receipt on its way to the client node, or
/// swaps its signature for bytes that do not verify (the client node keeps
/// receipts as evidence against the proxy), or drops the answer's last
/// chunks, or passes one recipient's stamp off for another's. The stamp,
/// under the answering recipient's key over the receipt and its signature,
/// at the position after the last chunk, opens for none of these.
#[test]
fn a_receipt_stamp_covers_the_receipt_its_signature_and_the_answers_end() {
    let ids = [Identity::generate().unwrap(), Identity::generate().unwrap()];
    let keys = [SealingKey::generate(), SealingKey::generate()];
    let to: Vec<_> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| crate::SealTo::at_base_price(id.fingerprint(), key.public()))
        .collect();
    let (sealed, mut opener) = seal(&request(), &to, 1_000).unwrap();
    let (_, mut sealer) = keys[0].open(&ids[0].fingerprint(), &sealed).unwrap();
    let (_, mut other) = keys[1].open(&ids[1].fingerprint(), &sealed).unwrap();
    let receipt = |id: &Identity, completion_tokens: u64| {
        crate::SignedReceipt::sign(
            crate::Receipt {
                request_id: sealed.header.request_id,
                model: "m".into(),
                model_sha256: None,
                usage: crate::Usage {
                    prompt_tokens: 5,
                    completion_tokens,
                    ..Default::default()
                },
                finish_reason: crate::FinishReason::Stop,
                chunks: 2,
                worker: id.fingerprint(),
                price_coefficient: 1000,
                issued_at_ms: 1,
                partial: false,
            },
            id,
        )
    };
    let first = sealer.seal("Hello", 1);
    let last = sealer.seal(" world", 1);
    let honest = receipt(&ids[0], 2);
    let stamp = sealer.stamp(&honest);
    opener.open(&first).unwrap();
    // The last chunk dropped: the stamp is not at the position the client
    // node is at.
    assert!(opener.check_stamp(&honest, &stamp).is_err());
    opener.open(&last).unwrap();
    opener.check_stamp(&honest, &stamp).unwrap();

    // More tokens, re-signed by the same worker key but not stamped by its
    // enclave for this answer; the same receipt with a signature that does
    // not verify; a stamp of zeros.
    let mut inflated = honest.clone();
    inflated.receipt.usage.completion_tokens = 200;
    let mut garbled = honest.clone();
    garbled.signature = vec![0; 64];
    assert!(opener.check_stamp(&inflated, &stamp).is_err());
    assert!(opener.check_stamp(&receipt(&ids[0], 200), &stamp).is_err());
    assert!(opener.check_stamp(&garbled, &stamp).is_err());
    assert!(opener.check_stamp(&honest, &[0; 16]).is_err());

    // The other recipient's answer and stamp, passed off after the first
    // recipient's chunks: refused (the client node opened the first's).
    other.seal("Hello", 1);
    other.seal(" world", 1);
    let theirs = receipt(&ids[1], 2);
    let their_stamp = other.stamp(&theirs);
    assert!(opener.check_stamp(&theirs, &their_stamp).is_err());
}

#[test]
fn max_tokens_in_body_and_header_must_agree() {
    let w = worker();
    let mut req = request();
    req.params.max_tokens = None;
    let (sealed, _) = seal(
        &req,
        &[crate::SealTo::at_base_price(w.id, w.key.public())],
        0,
    )
    .unwrap();
    assert_eq!(sealed.header.max_tokens, None);
    w.key.open(&w.id, &sealed).unwrap();
    assert_eq!(seal(&req, &[], 0).err(), Some(SealError::NoRecipients));
}

proptest! {
    // Each case runs up to 15 HPKE seals and opens (slow in debug builds).
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// No (key, nonce) pair repeats across recipients, requests or reseals,
    /// all in the same sessions (and across an epoch boundary): every
    /// recipient of every seal answers under a key of its own, so the first
    /// chunk of any one answer opens under no other answer's key.
    #[test]
    fn answer_keys_never_repeat_across_recipients_and_seals(seals in 2usize..6, recipients in 1usize..4, start in 0u64..3 * session::EPOCH_MS) {
        let workers: Vec<Worker> = (0..recipients).map(|_| worker()).collect();
        let to: Vec<_> = workers.iter().map(|w| crate::SealTo::at_base_price(w.id, w.key.public())).collect();
        let sessions = SenderSessions::new();
        let mut first_chunks = Vec::new();
        let mut openers = Vec::new();
        for i in 0..seals {
            let at = start + i as u64 * session::EPOCH_MS / 3;
            let (sealed, opener) = sessions.seal(&request(), &to, at).unwrap();
            for w in &workers {
                let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
                first_chunks.push(sealer.seal("same text", 1));
            }
            openers.push(opener);
        }
        // Same plaintext at the same position: the keystream parts (the
        // ciphertext without its tag) differ only if the keys do.
        let streams: std::collections::HashSet<&[u8]> =
            first_chunks.iter().map(|c| &c[..c.len() - 16]).collect();
        prop_assert_eq!(streams.len(), first_chunks.len());
        prop_assert_eq!(sessions.len(), recipients);
        // Each seal's opener opens none of the other seals' chunks (a failed
        // open leaves it as it was), then its own.
        for (i, opener) in openers.iter_mut().enumerate() {
            for (j, chunk) in first_chunks.iter().enumerate() {
                if j / recipients != i {
                    prop_assert!(opener.open(chunk).is_err());
                }
            }
            prop_assert!(opener.open(&first_chunks[i * recipients]).is_ok());
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_sealed_requests_never_open_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let w = worker();
        if let Ok(mut request) = postcard::from_bytes::<SealedRequest>(&bytes) {
            // Address it to us so opening gets past the recipient lookup.
            if let Some(r) = request.recipients.first_mut() {
                r.worker = w.id;
            }
            prop_assert!(w.key.open(&w.id, &request).is_err());
        }
    }

    #[test]
    fn arbitrary_chunks_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let w = worker();
        let (_, mut opener) = seal(&request(), &[crate::SealTo::at_base_price(w.id, w.key.public())], 0).unwrap();
        prop_assert!(opener.open(&bytes).is_err());
    }
}

/// The text of an opened chunk.
fn text_of(piece: Piece) -> String {
    match piece {
        Piece::Text { text, .. } => text,
        Piece::Error { message, .. } => panic!("an error chunk: {message}"),
        Piece::ToolCall(c) => panic!("a tool call chunk: {c:?}"),
        Piece::Logprobs(l) => panic!("a logprobs chunk: {l:?}"),
        Piece::Reasoning { text, .. } => panic!("a reasoning chunk: {text:?}"),
        Piece::Choice(i) => panic!("a choice chunk: {i}"),
    }
}

#[test]
fn a_borrowed_piece_encodes_as_the_piece_the_client_node_decodes() {
    for (text, tokens) in [("", 0), ("hello", 3), (&"x".repeat(300)[..], u32::MAX)] {
        let borrowed = postcard::to_allocvec(&PieceRef::Text { text, tokens }).unwrap();
        let owned = postcard::to_allocvec(&Piece::Text {
            text: text.into(),
            tokens,
        })
        .unwrap();
        assert_eq!(borrowed, owned);
        assert!(borrowed.len() <= PieceRef::Text { text, tokens }.max_encoded_len());
    }
    let kind = crate::ErrorKind::Upstream;
    let borrowed = postcard::to_allocvec(&PieceRef::Error {
        kind,
        message: "engine said no",
    })
    .unwrap();
    let owned = postcard::to_allocvec(&Piece::Error {
        kind,
        message: "engine said no".into(),
    })
    .unwrap();
    assert_eq!(borrowed, owned);
}

#[test]
fn a_borrowed_tool_call_encodes_as_the_piece_the_client_node_decodes() {
    let chunk = crate::ToolCallChunk {
        index: 1,
        id: Some("call_1".into()),
        name: Some("get_weather".into()),
        arguments: r#"{"city": "Paris"}"#.into(),
        tokens: 9,
    };
    let borrowed = postcard::to_allocvec(&PieceRef::ToolCall(&chunk)).unwrap();
    let owned = postcard::to_allocvec(&Piece::ToolCall(chunk.clone())).unwrap();
    assert_eq!(borrowed, owned);
    assert!(PieceRef::ToolCall(&chunk).max_encoded_len() >= owned.len());
}

#[test]
fn borrowed_log_probabilities_encode_as_the_piece_the_client_node_decodes() {
    let logprobs = vec![crate::TokenLogprob {
        bytes: b" Paris".to_vec(),
        logprob: -0.25,
        top: vec![crate::TopLogprob {
            bytes: b" Lyon".to_vec(),
            logprob: -2.5,
        }],
    }];
    let borrowed = postcard::to_allocvec(&PieceRef::Logprobs(&logprobs)).unwrap();
    let owned = postcard::to_allocvec(&Piece::Logprobs(logprobs.clone())).unwrap();
    assert_eq!(borrowed, owned);
    assert!(PieceRef::Logprobs(&logprobs).max_encoded_len() >= owned.len());
}
