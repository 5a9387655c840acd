use super::*;

/// Block `seqno` of a chain made one every 5 s from time 1000.
fn block(seqno: u32) -> AnchorBlock {
    let mut root_hash = [0u8; 32];
    root_hash[..4].copy_from_slice(&seqno.to_be_bytes());
    root_hash[31] = 0xab;
    AnchorBlock {
        anchor: Anchor { seqno, root_hash },
        gen_utime: 1000 + 5 * seqno as u64,
    }
}

/// The first `count` blocks of that chain.
fn blocks(count: u32) -> Arc<FixedBlocks> {
    FixedBlocks::new(&(1..=count).map(block).collect::<Vec<_>>())
}

#[test]
fn anchors_round_trip_and_refuse_other_lengths() {
    let anchor = block(7).anchor;
    assert_eq!(Anchor::from_bytes(&anchor.to_bytes()).unwrap(), anchor);
    assert!(Anchor::from_bytes(&[0; 35]).is_err());
    assert!(Anchor::from_bytes(&[0; 37]).is_err());
}

#[tokio::test]
async fn a_block_is_pending_then_known_in_the_background_and_judged_by_its_hash() {
    let blocks = blocks(10);
    let anchors = BlockAnchors::new(blocks.clone());
    anchors.ready().await.unwrap();
    let anchor = block(4).anchor;
    assert_eq!(anchors.lookup(&anchor), Lookup::Pending);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while anchors.lookup(&anchor) == Lookup::Pending {
        assert!(tokio::time::Instant::now() < deadline, "never looked up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(anchors.lookup(&anchor), Lookup::Known { gen_utime: 1020 });
    assert_eq!(anchors.head(), Some(block(10)));

    // Same number, another hash: a forged anchor.
    let forged = Anchor {
        root_hash: [7; 32],
        ..anchor
    };
    assert_eq!(anchors.fetch(&forged).await.unwrap(), Lookup::NotOnChain);
    // A block the chain does not have yet (a guess at the future) is not
    // on chain now, and is asked again later rather than remembered.
    let future = block(12).anchor;
    assert_eq!(anchors.fetch(&future).await.unwrap(), Lookup::NotOnChain);
    blocks.push(block(11));
    blocks.push(block(12));
    assert_eq!(
        anchors.fetch(&future).await.unwrap(),
        Lookup::Known { gen_utime: 1060 }
    );
}

#[tokio::test]
async fn evidence_older_than_the_policy_allows_is_stale() {
    let anchors = BlockAnchors::new(blocks(10));
    let anchor = block(2).anchor;
    anchors.fetch(&anchor).await.unwrap();
    assert_eq!(
        check(Some(&anchors), Some(&anchor), 1010 + 60, 60),
        Ok(1010)
    );
    let err = check(Some(&anchors), Some(&anchor), 1010 + 61, 60).unwrap_err();
    assert!(
        matches!(err, Staleness::TooOld { age_secs: 61, .. }),
        "{err}"
    );
    assert_eq!(
        check(Some(&anchors), None, 1010, 60),
        Err(Staleness::NoAnchor)
    );
    assert_eq!(
        check(None, Some(&anchor), 1010, 60),
        Err(Staleness::NoChain)
    );
}

/// A TON API endpoint run by an attacker serves a block the chain never had
/// (so that evidence replayed in a new certificate looks as if made after
/// it). Alone it is believed; beside an honest endpoint the two disagree
/// and the block is not believed. Blocks both serve alike are.
#[tokio::test]
async fn a_lying_endpoint_is_outvoted_by_an_honest_one() {
    let honest = blocks(10);
    let liar = blocks(10);
    let mut forged = block(11);
    forged.anchor.root_hash = [0xee; 32];
    liar.push(forged);
    honest.push(block(11));

    let alone = BlockAnchors::new(liar.clone());
    assert_eq!(
        alone.fetch(&forged.anchor).await.unwrap(),
        Lookup::Known { gen_utime: 1055 }
    );

    let both = BlockAnchors::new(AgreeingBlocks::new(vec![honest.clone(), liar.clone()]));
    let err = both.fetch(&forged.anchor).await.unwrap_err();
    assert!(err.contains("disagree on masterchain block 11"), "{err}");
    assert_eq!(
        both.fetch(&block(4).anchor).await.unwrap(),
        Lookup::Known { gen_utime: 1020 }
    );
    // The head is the lowest both have, confirmed by both.
    honest.push(block(12));
    let head = AgreeingBlocks::new(vec![honest, blocks(10)])
        .head()
        .await
        .unwrap();
    assert_eq!(head, block(10));
}
