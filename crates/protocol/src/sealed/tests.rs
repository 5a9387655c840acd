use proptest::prelude::*;

use super::*;
use crate::frame::ChatMessage;
use crate::tls::Identity;

const MARKER: &str = "MARKER-7f3a-secret-prompt";

fn request() -> GenerateRequest {
    GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![ChatMessage {
            role: "user".into(),
            content: format!("summarise this: {MARKER}"),
        }]),
        params: SamplingParams {
            max_tokens: Some(16),
            temperature: Some(0.5),
            ..Default::default()
        },
    }
}

struct Worker {
    id: Fingerprint,
    key: SealingKey,
}

fn worker() -> Worker {
    Worker {
        id: Identity::generate().unwrap().fingerprint(),
        key: SealingKey::generate(),
    }
}

#[test]
fn each_candidate_opens_the_same_request_and_the_answer_round_trips() {
    let workers = [worker(), worker(), worker()];
    let to: Vec<_> = workers.iter().map(|w| (w.id, w.key.public())).collect();
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
        let chunk = sealer.seal(text);
        assert_eq!(opener.open(&chunk).unwrap(), text);
    }
}

#[test]
fn the_proxy_sees_no_plaintext() {
    let w = worker();
    let (sealed, _) = seal(&request(), &[(w.id, w.key.public())], 0).unwrap();
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
    let (sealed, _) = seal(&request(), &[(a.id, a.key.public())], 0).unwrap();
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
    let to = [(w.id, w.key.public())];
    let (sealed, _) = seal(&request(), &to, 0).unwrap();
    let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
    let chunk = sealer.seal("one");
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
    let (sealed, mut opener) = seal(&request(), &[(w.id, w.key.public())], 0).unwrap();
    let (_, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
    let _first = sealer.seal("first");
    let second = sealer.seal("second");
    // Second before first: refused; and a dropped chunk makes every later one fail.
    assert_eq!(opener.open(&second), Err(SealError::BadChunk));
    let (sealed2, mut opener2) = seal(&request(), &[(w.id, w.key.public())], 0).unwrap();
    let (_, mut sealer2) = w.key.open(&w.id, &sealed2).unwrap();
    let a = sealer2.seal("a");
    let _b = sealer2.seal("b");
    let c = sealer2.seal("c");
    assert_eq!(opener2.open(&a).unwrap(), "a");
    assert_eq!(opener2.open(&c), Err(SealError::BadChunk));
}

#[test]
fn max_tokens_in_body_and_header_must_agree() {
    let w = worker();
    let mut req = request();
    req.params.max_tokens = None;
    let (sealed, _) = seal(&req, &[(w.id, w.key.public())], 0).unwrap();
    assert_eq!(sealed.header.max_tokens, None);
    w.key.open(&w.id, &sealed).unwrap();
    assert_eq!(seal(&req, &[], 0).err(), Some(SealError::NoRecipients));
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
        let (_, mut opener) = seal(&request(), &[(w.id, w.key.public())], 0).unwrap();
        prop_assert!(opener.open(&bytes).is_err());
    }
}
