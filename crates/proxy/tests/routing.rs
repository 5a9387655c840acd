//! The registry's routing decisions on many workers: the short list by
//! price within a limit, the price index kept right across re-announces and
//! disconnects, full workers skipped, the pick among two candidates, and
//! requests that ask for a feature listed only the workers serving it.

use std::sync::Arc;

use cocoon_protocol::{
    length_codec, Announce, Connection, ErrorKind, Event, Features, Handler, Hello, ModelOffer,
    MuxOptions, RequestBody, Role, RoutingPrefs, Sort, WorkerKey, DEFAULT_MAX_FRAME_BYTES,
};
use cocoon_proxy::{QueueSettings, Registry};
use futures::stream::{self, BoxStream, StreamExt};
use std::time::{Duration, Instant};
use tokio_util::codec::Framed;

struct Idle;
impl Handler for Idle {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

fn key(i: u64) -> WorkerKey {
    let mut identity = vec![0u8; 44];
    identity[..8].copy_from_slice(&i.to_be_bytes());
    WorkerKey {
        identity,
        sealing_key: [1; 32],
        evidence: None,
        configuration: None,
        anchor: None,
        gpus: Vec::new(),
    }
}

fn announce(registry: &Registry, conn: &Connection, i: u64, price: u32, capacity: u32) {
    announce_serving(registry, conn, i, price, capacity, Features::default());
}

fn announce_serving(
    registry: &Registry,
    conn: &Connection,
    i: u64,
    price: u32,
    capacity: u32,
    features: Features,
) {
    let announce = Announce {
        models: vec![ModelOffer {
            context_length: None,
            quantization: None,
            features,
            name: "m".into(),
            max_concurrent: capacity,
            weights_sha256: None,
            price_coefficient: price,
        }],
        key: Some(key(i)),
        payout: None,
        vouched: None,
    };
    registry.announce(i, conn, &announce, key(i), None);
}

fn prices(registry: &Registry, prefs: RoutingPrefs) -> Vec<u32> {
    registry
        .keys("m", &prefs)
        .unwrap()
        .iter()
        .map(|l| l.price_coefficient)
        .collect()
}

/// A live connection for offers (nothing is sent over it).
fn connection() -> (Connection, tokio::io::DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let conn = Connection::spawn(
        Framed::new(ours, length_codec(DEFAULT_MAX_FRAME_BYTES)),
        Hello {
            role: Role::Worker,
            software: "test".into(),
        },
        None,
        Arc::new(Idle),
        MuxOptions::default(),
    );
    (conn, theirs)
}

#[tokio::test]
async fn the_short_list_is_the_cheapest_with_room_within_the_limit() {
    let (conn, _theirs) = connection();
    let registry = Registry::new(["m".to_string()]);
    // 1,000 workers priced 1000..1999, in scrambled order.
    for i in 0..1000u64 {
        announce(&registry, &conn, i, 1000 + (i * 7919 % 1000) as u32, 1);
    }
    let by_price = RoutingPrefs::default();
    assert_eq!(
        prices(&registry, by_price),
        (1000..1008).collect::<Vec<_>>()
    );
    // A limit below everyone: refused, naming the cheapest price.
    let low = RoutingPrefs {
        max_coefficient: Some(900),
        sort: Sort::Price,
        ..Default::default()
    };
    let err = registry.keys("m", &low).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoWorker);
    assert!(
        err.message.contains("the cheapest asks 1000"),
        "{}",
        err.message
    );

    // The cheapest worker re-announces dearer: the index follows.
    let cheapest = (0..1000u64).find(|i| i * 7919 % 1000 == 0).unwrap();
    announce(&registry, &conn, cheapest, 5000, 1);
    assert_eq!(prices(&registry, by_price)[0], 1001);
    // The next cheapest is taken (its one slot): it drops off the list.
    let next = (0..1000u64).find(|i| i * 7919 % 1000 == 1).unwrap();
    let held = registry
        .pick("m", &[key(next).worker()], Sort::Price)
        .unwrap();
    assert_eq!(held.price_coefficient, 1001);
    assert_eq!(prices(&registry, by_price)[0], 1002);
    // Of two candidates, the cheaper with room is picked.
    let a = (0..1000u64).find(|i| i * 7919 % 1000 == 5).unwrap();
    let b = (0..1000u64).find(|i| i * 7919 % 1000 == 3).unwrap();
    let picked = registry
        .pick("m", &[key(a).worker(), key(b).worker()], Sort::Price)
        .unwrap();
    assert_eq!(picked.price_coefficient, 1003);
    drop(picked);
    drop(held);
    assert_eq!(
        prices(&registry, by_price)[0],
        1001,
        "released slots count again"
    );
    // A worker that disconnects is forgotten by the index too.
    registry.remove(next);
    assert_eq!(prices(&registry, by_price)[0], 1002);
    // By load instead of price: all idle, so still within the limit.
    let by_load = RoutingPrefs {
        max_coefficient: Some(1100),
        sort: Sort::Throughput,
        ..Default::default()
    };
    let listed = prices(&registry, by_load);
    assert_eq!(listed.len(), 8);
    assert!(listed.iter().all(|p| *p <= 1100), "{listed:?}");
}

#[tokio::test]
async fn a_full_model_queues_requests_until_a_slot_frees_up_to_a_bound_and_a_deadline() {
    let (conn, _theirs) = connection();
    let registry = Arc::new(Registry::new(["m".to_string()]).with_queue(QueueSettings {
        max_waiting: 2,
        max_wait: Duration::from_millis(300),
    }));
    announce(&registry, &conn, 1, 1000, 1);
    let only = [key(1).worker()];
    let held = registry.pick("m", &only, Sort::Price).unwrap();

    // Two wait; a third is refused at once.
    let waiter = |r: Arc<Registry>| {
        tokio::spawn(async move {
            r.pick_or_wait("m", &[key(1).worker()], Sort::Price, false)
                .await
        })
    };
    let (first, second) = (waiter(registry.clone()), waiter(registry.clone()));
    while registry.queue_depths() != [("m".to_string(), 2)] {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let refused = registry
        .pick_or_wait("m", &only, Sort::Price, false)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.kind, ErrorKind::Overloaded);
    assert!(
        refused.message.contains("already waiting"),
        "{}",
        refused.message
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refused fast"
    );

    // The slot frees: one waiter takes it; the other waits out its deadline.
    drop(held);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let (served, timed_out) = match (first, second) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e),
        (a, b) => panic!(
            "expected one served and one refused: {:?} {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    };
    assert_eq!(served.price_coefficient, 1000);
    assert_eq!(timed_out.kind, ErrorKind::Overloaded);
    assert!(
        timed_out.message.contains("300 ms"),
        "{}",
        timed_out.message
    );
    assert_eq!(
        registry.queue_depths(),
        [("m".to_string(), 0)],
        "tickets given back"
    );
}

#[tokio::test]
async fn a_failing_worker_goes_last_then_is_tried_again_after_its_probation() {
    let (conn, _theirs) = connection();
    let registry = Registry::new(["m".to_string()]).with_probation(Duration::from_millis(200));
    announce(&registry, &conn, 1, 1000, 4);
    announce(&registry, &conn, 2, 1500, 4);
    let both = [key(1).worker(), key(2).worker()];
    for _ in 0..5 {
        let picked = registry.pick("m", &both, Sort::Price).unwrap();
        assert_eq!(picked.price_coefficient, 1000);
        picked.slot.failed();
    }
    // Failing: the dearer, healthy worker is listed and picked first.
    assert_eq!(prices(&registry, RoutingPrefs::default()), [1500]);
    let picked = registry.pick("m", &both, Sort::Price).unwrap();
    assert_eq!(picked.price_coefficient, 1500);
    drop(picked);
    let stats = registry.offer_stats();
    assert!(!stats[0].healthy || !stats[1].healthy);
    assert_eq!(stats.iter().map(|s| s.failures).sum::<u64>(), 5);

    // After its probation the cheap one is tried again...
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(prices(&registry, RoutingPrefs::default()), [1000, 1500]);
    let picked = registry.pick("m", &both, Sort::Price).unwrap();
    assert_eq!(picked.price_coefficient, 1000);
    // ...and one more failure puts it back on probation.
    picked.slot.failed();
    assert_eq!(prices(&registry, RoutingPrefs::default()), [1500]);
}

#[tokio::test]
async fn a_conversation_returns_to_its_worker_while_it_has_room() {
    let (conn, _theirs) = connection();
    let registry = Registry::new(["m".to_string()]);
    announce(&registry, &conn, 1, 1000, 2);
    announce(&registry, &conn, 2, 1500, 2);
    // Sealed to the dearer worker first, with affinity: it is taken...
    let dear_first = [key(2).worker(), key(1).worker()];
    let a = registry.pick_affine("m", &dear_first, Sort::Price).unwrap();
    let b = registry.pick_affine("m", &dear_first, Sort::Price).unwrap();
    assert_eq!((a.price_coefficient, b.price_coefficient), (1500, 1500));
    // ...until it is full: then the other candidate, as without affinity.
    let c = registry.pick_affine("m", &dear_first, Sort::Price).unwrap();
    assert_eq!(c.price_coefficient, 1000);
    // Without affinity the cheaper one is preferred.
    drop((a, b));
    let d = registry.pick("m", &dear_first, Sort::Price).unwrap();
    assert_eq!(d.price_coefficient, 1000);
}

#[tokio::test]
async fn a_request_needing_a_feature_is_listed_only_workers_serving_it() {
    let (conn, _theirs) = connection();
    let registry = Registry::new(["m".to_string()]);
    let json = Features {
        structured_outputs: true,
        ..Features::default()
    };
    // The cheapest two serve plain chat only; the dearer one serves JSON.
    announce(&registry, &conn, 1, 1000, 4);
    announce(&registry, &conn, 2, 1001, 4);
    announce_serving(&registry, &conn, 3, 1500, 4, json);
    for sort in [Sort::Price, Sort::Throughput] {
        let needs_json = RoutingPrefs {
            sort,
            needs: json,
            ..Default::default()
        };
        assert_eq!(prices(&registry, needs_json), vec![1500], "{sort:?}");
        // Plain requests go to everyone, cheapest first.
        let plain = RoutingPrefs {
            sort: Sort::Price,
            ..Default::default()
        };
        assert_eq!(prices(&registry, plain)[0], 1000);
    }
    // Once the JSON worker leaves, a JSON request is a 400 naming the
    // field (not a 503: retrying will not help), a plain one still served.
    registry.remove(3);
    let needs_json = RoutingPrefs {
        needs: json,
        ..Default::default()
    };
    let err = registry.keys("m", &needs_json).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FeatureNotServed);
    assert!(
        err.message.starts_with("'response_format'"),
        "{}",
        err.message
    );
    assert_eq!(prices(&registry, RoutingPrefs::default()).len(), 2);
}
