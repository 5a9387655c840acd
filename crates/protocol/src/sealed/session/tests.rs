use super::super::tests::{request, worker};
use super::super::{aad, seal, unwrap, wrap_aad, SealError};
use super::*;

const T0: u64 = 1_800_000_000_000;

/// The content key a request key unwraps from `sealed`'s first recipient.
fn unwraps(request_key: &[u8; 32], sealed: &crate::SealedRequest) -> bool {
    let mut out = [0u8; 32];
    unwrap(
        request_key,
        &wrap_aad(&aad(&sealed.header), sealed.recipients[0].price_coefficient),
        &sealed.recipients[0].sealed_key,
        &mut out,
    )
}

#[test]
fn one_session_serves_many_requests_to_a_worker() {
    let w = worker();
    let sessions = SenderSessions::new();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let mut encs = std::collections::HashSet::new();
    for i in 0..50 {
        let (sealed, mut opener) = sessions.seal(&request(), &to, T0 + i * 1_000).unwrap();
        encs.insert(sealed.recipients[0].enc.clone());
        let (opened, mut sealer) = w.key.open(&w.id, &sealed).unwrap();
        assert_eq!(opened, request());
        let chunk = sealer.seal("hi", 1);
        assert!(opener.open(&chunk).is_ok());
    }
    // One encapsulation (the only X25519 work) for all 50 requests, on
    // both sides.
    assert_eq!(encs.len(), 1);
    assert_eq!(sessions.len(), 1);
    assert_eq!(w.key.sessions(), 1);
}

/// The attack: someone holding one request's key (a dump of one request's
/// state) tries it on the session's other requests. It opens its own
/// request only.
#[test]
fn a_leaked_request_key_opens_no_other_request() {
    let w = worker();
    let sessions = SenderSessions::new();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let (a, _) = sessions.seal(&request(), &to, T0).unwrap();
    let (b, mut b_opener) = sessions.seal(&request(), &to, T0 + 10).unwrap();
    let leaked = sessions
        .key(&w.id, &w.key.public(), &a.header.request_id, T0)
        .unwrap()
        .request_key;
    assert!(unwraps(&leaked, &a), "the leaked key is request A's");
    assert!(!unwraps(&leaked, &b), "request A's key opened request B");
    // Nor B's answer: the answer key is derived from B's own request key.
    let (_, mut b_sealer) = w.key.open(&w.id, &b).unwrap();
    let chunk = b_sealer.seal("B's answer", 2);
    let mut forged = super::super::ReplyOpener {
        candidates: vec![(
            w.id,
            super::super::ChunkKey::new(
                super::super::answer_key(&leaked, &w.id),
                b.header.request_id,
            ),
        )],
        chosen: None,
        request_id: b.header.request_id,
    };
    assert_eq!(forged.open(&chunk), Err(SealError::BadChunk));
    assert!(b_opener.open(&chunk).is_ok());
}

/// The attack: a dump of the client node's memory at some minute, against
/// requests sealed in earlier minutes of the same session. The node holds
/// only the current epoch's key, and earlier keys cannot be computed from
/// it (each is a one-way step behind).
#[test]
fn the_client_nodes_state_opens_no_request_of_an_earlier_epoch() {
    let w = worker();
    let sessions = SenderSessions::new();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let (early, _) = sessions.seal(&request(), &to, T0).unwrap();
    let (held_epoch, held_then) = sessions.held(&w.id, &w.key.public()).unwrap();
    assert_eq!(held_epoch, epoch_of(T0));
    assert!(unwraps(
        &request_key(&held_then, &early.header.request_id),
        &early
    ));

    let later = T0 + 2 * EPOCH_MS;
    let (recent, _) = sessions.seal(&request(), &to, later).unwrap();
    let (held_epoch, held_now) = sessions.held(&w.id, &w.key.public()).unwrap();
    assert_eq!(held_epoch, epoch_of(later));
    // What the node holds now opens the recent request and not the early
    // one, at its epoch or any step forward of it.
    assert!(unwraps(
        &request_key(&held_now, &recent.header.request_id),
        &recent
    ));
    let mut key = held_now;
    for _ in 0..4 {
        assert!(!unwraps(
            &request_key(&key, &early.header.request_id),
            &early
        ));
        key = next_epoch(&key);
    }
    // The worker still opens both (it may receive them in any order).
    w.key.open(&w.id, &recent).unwrap();
    w.key.open(&w.id, &early).unwrap();
}

#[test]
fn a_worker_that_lost_its_sessions_rebuilds_them() {
    let w = worker();
    let sessions = SenderSessions::new();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let (first, _) = sessions.seal(&request(), &to, T0).unwrap();
    w.key.open(&w.id, &first).unwrap();
    w.key.forget_sessions();
    let (second, _) = sessions.seal(&request(), &to, T0 + 3 * EPOCH_MS).unwrap();
    assert_eq!(first.recipients[0].enc, second.recipients[0].enc);
    w.key.open(&w.id, &second).unwrap();
    assert_eq!(w.key.sessions(), 1);
    // Requests arriving out of epoch order, older than the epochs kept.
    let (late, _) = sessions.seal(&request(), &to, T0 + 9 * EPOCH_MS).unwrap();
    w.key.open(&w.id, &late).unwrap();
    w.key.open(&w.id, &first).unwrap();
    w.key.open(&w.id, &second).unwrap();
}

/// A proxy sending requests under made-up sessions (a valid encapsulation
/// with a wrapped key that does not open) gets them refused, and the
/// worker keeps none of them: forged sessions cannot crowd out real ones.
#[test]
fn forged_sessions_are_refused_and_not_kept() {
    let w = worker();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    for _ in 0..20 {
        let (mut forged, _) = seal(&request(), &to, T0).unwrap();
        forged.recipients[0].sealed_key[5] ^= 1;
        assert_eq!(w.key.open(&w.id, &forged).unwrap_err(), SealError::Tampered);
    }
    assert_eq!(w.key.sessions(), 0);
    // A held session's encapsulation with a rewritten first epoch.
    let sessions = SenderSessions::new();
    let (sealed, _) = sessions.seal(&request(), &to, T0).unwrap();
    w.key.open(&w.id, &sealed).unwrap();
    let (next, _) = sessions.seal(&request(), &to, T0 + 1).unwrap();
    let mut moved = next.clone();
    moved.recipients[0].since -= 1;
    assert_eq!(w.key.open(&w.id, &moved).unwrap_err(), SealError::Tampered);
    w.key.open(&w.id, &next).unwrap();
}

#[test]
fn sessions_are_bounded_in_time() {
    let w = worker();
    let to = [crate::SealTo::at_base_price(w.id, w.key.public())];
    let sessions = SenderSessions::new();
    let (first, _) = sessions.seal(&request(), &to, T0).unwrap();
    // The client node starts a new session after SESSION_EPOCHS.
    let (hour_later, _) = sessions
        .seal(&request(), &to, T0 + SESSION_EPOCHS * EPOCH_MS)
        .unwrap();
    assert_ne!(first.recipients[0].enc, hour_later.recipients[0].enc);
    // A clock set back starts a new one too (keys never step backwards).
    let (back, _) = sessions.seal(&request(), &to, T0).unwrap();
    assert_ne!(back.recipients[0].enc, hour_later.recipients[0].enc);
    w.key.open(&w.id, &back).unwrap();
    // The worker refuses a session claimed to be older than it allows, or
    // to start after the request.
    let (mut old, _) = seal(&request(), &to, T0).unwrap();
    old.recipients[0].since = epoch_of(T0) - MAX_SESSION_EPOCHS;
    assert!(matches!(
        w.key.open(&w.id, &old).unwrap_err(),
        SealError::Malformed(_)
    ));
    old.recipients[0].since = epoch_of(T0) + 1;
    assert!(matches!(
        w.key.open(&w.id, &old).unwrap_err(),
        SealError::Malformed(_)
    ));
}
