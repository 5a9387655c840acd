use std::sync::atomic::AtomicUsize;

use futures::stream;

use super::*;
use crate::{codec::length_codec, Done, FinishReason, Role, Usage};

/// Answers `Generate` with `n` deltas, one every millisecond, counting how many it
/// produced and how many streams are alive.
struct Counter {
    produced: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
}

struct AliveGuard(Arc<AtomicUsize>);
impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handler for Counter {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        let RequestBody::Generate(req) = body else {
            return stream::iter([Event::Models(vec![])]).boxed();
        };
        let n = req.header.max_tokens.unwrap_or(3);
        let produced = self.produced.clone();
        self.alive.fetch_add(1, Ordering::SeqCst);
        let guard = AliveGuard(self.alive.clone());
        stream::unfold((0u32, guard), move |(i, guard)| {
            let produced = produced.clone();
            async move {
                if i > n {
                    return None;
                }
                if i == n {
                    let done = Event::Done(Done {
                        finish_reason: FinishReason::Length,
                        usage: Usage {
                            prompt_tokens: 1,
                            completion_tokens: n as u64,
                            ..Usage::default()
                        },
                        receipt: None,
                        stamp: None,
                        finishes: Vec::new(),
                    });
                    return Some((done, (i + 1, guard)));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                produced.fetch_add(1, Ordering::SeqCst);
                Some((
                    Event::Delta {
                        text: format!("t{i} "),
                        tokens: 1,
                    },
                    (i + 1, guard),
                ))
            }
        })
        .boxed()
    }
}

/// A request for `n` tokens (the test handler reads only the header).
fn generate(n: u32) -> RequestBody {
    RequestBody::Generate(crate::SealedRequest {
        sort: crate::Sort::default(),
        affinity: false,
        header: crate::SealHeader {
            request_id: [0; 16],
            model: "m".into(),
            max_tokens: Some(n),
            sent_at_ms: 0,
        },
        recipients: vec![],
        ciphertext: vec![],
    })
}

struct Pair {
    client: Connection,
    server: Connection,
    produced: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
}

fn pair(options: MuxOptions) -> Pair {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let produced = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicUsize::new(0));
    let hello = |role| Hello {
        role,
        software: "t".into(),
    };
    let client = Connection::spawn(
        Framed::new(a, length_codec(1 << 20)),
        hello(Role::Proxy),
        None,
        Arc::new(Counter {
            produced: Arc::new(AtomicUsize::new(0)),
            alive: Arc::new(AtomicUsize::new(0)),
        }),
        options.clone(),
    );
    let server = Connection::spawn(
        Framed::new(b, length_codec(1 << 20)),
        hello(Role::Client),
        None,
        Arc::new(Counter {
            produced: produced.clone(),
            alive: alive.clone(),
        }),
        options,
    );
    Pair {
        client,
        server,
        produced,
        alive,
    }
}

async fn collect(stream: ResponseStream) -> Vec<Event> {
    stream.collect().await
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection() {
    let p = pair(MuxOptions::default());
    let mut tasks = Vec::new();
    for n in 1..=50u32 {
        let client = p.client.clone();
        tasks.push(tokio::spawn(async move {
            let events = collect(client.request(generate(n)).await.unwrap()).await;
            assert_eq!(events.len(), n as usize + 1);
            assert!(matches!(events.last(), Some(Event::Done(d)) if d.usage.completion_tokens == n as u64));
            for (i, e) in events[..n as usize].iter().enumerate() {
                assert_eq!(e, &Event::Delta { text: format!("t{i} "), tokens: 1 });
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(p.client.outgoing_in_flight(), 0);
}

#[tokio::test]
async fn dropping_a_stream_cancels_work_at_the_peer() {
    let p = pair(MuxOptions::default());
    let mut stream = p.client.request(generate(100_000)).await.unwrap();
    for _ in 0..5 {
        assert!(matches!(stream.next().await, Some(Event::Delta { .. })));
    }
    drop(stream);
    for _ in 0..200 {
        if p.alive.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        p.alive.load(Ordering::SeqCst),
        0,
        "serving stream not dropped"
    );
    let produced = p.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        p.produced.load(Ordering::SeqCst),
        produced,
        "work went on after cancel"
    );
    assert!(produced < 1000);
    assert_eq!(p.server.incoming_in_flight(), 0);
}

#[tokio::test]
async fn closing_ends_open_streams_with_an_error() {
    let p = pair(MuxOptions::default());
    let mut stream = p.client.request(generate(100_000)).await.unwrap();
    assert!(matches!(stream.next().await, Some(Event::Delta { .. })));
    p.server.close("test over");
    let rest: Vec<Event> = stream.collect().await;
    assert!(
        matches!(rest.last(), Some(Event::Error(e)) if e.kind == ErrorKind::Upstream),
        "{rest:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), p.client.closed())
        .await
        .unwrap();
    assert!(p.client.request(generate(1)).await.is_err());
}

#[tokio::test]
async fn silent_peer_is_dropped_after_idle_timeout() {
    // The peer end is a raw duplex that never answers.
    let (a, _b) = tokio::io::duplex(1024);
    let conn = Connection::spawn(
        Framed::new(a, length_codec(1024)),
        Hello {
            role: Role::Worker,
            software: "t".into(),
        },
        None,
        Arc::new(Counter {
            produced: Default::default(),
            alive: Default::default(),
        }),
        MuxOptions {
            keepalive_interval: Duration::from_millis(20),
            idle_timeout: Duration::from_millis(100),
            max_incoming: 8,
            ..MuxOptions::default()
        },
    );
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(conn.close_reason().unwrap().contains("silent"));
}

#[tokio::test]
async fn keepalive_holds_an_idle_connection_open() {
    // Idle for three idle timeouts; the margins (pings 20x more often than
    // the timeout) hold on a loaded 2-core machine.
    let p = pair(MuxOptions {
        keepalive_interval: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(1000),
        max_incoming: 8,
        ..MuxOptions::default()
    });
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!p.client.is_closed() && !p.server.is_closed());
    let events = collect(p.client.request(generate(2)).await.unwrap()).await;
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn garbage_from_peer_closes_with_a_reason() {
    use tokio::io::AsyncWriteExt;
    let (conn, mut peer) = raw_peer();
    peer.get_mut()
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(
        conn.close_reason().unwrap().contains("malformed"),
        "{:?}",
        conn.close_reason()
    );
}

/// Panics while serving `max_tokens` = 0 (at once) or 1 (in its answer).
struct Panics;

impl Handler for Panics {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        let RequestBody::Generate(req) = body else {
            return stream::iter([Event::Models(vec![])]).boxed();
        };
        match req.header.max_tokens {
            Some(0) => panic!("handler bug"),
            Some(1) => stream::once(async { panic!("answer bug") }).boxed(),
            _ => stream::iter([Event::Models(vec![])]).boxed(),
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_its_request_not_the_connection() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let hello = |role| Hello {
        role,
        software: "t".into(),
    };
    let client = Connection::spawn(
        Framed::new(a, length_codec(1 << 20)),
        hello(Role::Client),
        None,
        Arc::new(Panics),
        MuxOptions::default(),
    );
    let _server = Connection::spawn(
        Framed::new(b, length_codec(1 << 20)),
        hello(Role::Proxy),
        None,
        Arc::new(Panics),
        MuxOptions::default(),
    );
    for n in [0, 1] {
        let events = collect(client.request(generate(n)).await.unwrap()).await;
        assert!(
            matches!(&events[..], [Event::Error(e)] if e.kind == ErrorKind::Internal),
            "{events:?}"
        );
    }
    // The connection still serves.
    let events = collect(client.request(generate(5)).await.unwrap()).await;
    assert_eq!(events, vec![Event::Models(vec![])]);
    assert!(!client.is_closed());
}

/// A raw peer over a small pipe: a connection on one end, framed bytes we
/// write (and never read, unless told) on the other.
fn raw_peer() -> (
    Connection,
    Framed<tokio::io::DuplexStream, tokio_util::codec::LengthDelimitedCodec>,
) {
    let (a, b) = tokio::io::duplex(4096);
    let conn = Connection::spawn(
        Framed::new(a, length_codec(1 << 20)),
        Hello {
            role: Role::Worker,
            software: "t".into(),
        },
        None,
        Arc::new(Counter {
            produced: Default::default(),
            alive: Default::default(),
        }),
        MuxOptions::default(),
    );
    (conn, Framed::new(b, length_codec(1 << 20)))
}

/// The attack: a peer sends pings as fast as it can and never reads the
/// pongs. They pile up in the control queue (unbounded before: memory grew
/// until the node died); now the peer is disconnected once the queue is full.
#[tokio::test]
async fn a_peer_that_pings_without_reading_is_disconnected() {
    let (conn, mut peer) = raw_peer();
    let flood = async {
        for nonce in 0.. {
            if peer
                .send(encode_frame(&Frame::Ping(nonce)).unwrap())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        _ = flood => {}
        _ = conn.closed() => {}
        _ = tokio::time::sleep(Duration::from_secs(20)) => panic!("still buffering pongs after 20 s"),
    }
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(
        conn.close_reason().unwrap().contains("does not read"),
        "{:?}",
        conn.close_reason()
    );
}

/// A peer that answers faster than the answer is read: the answer is cut
/// at [`ANSWER_QUEUE`] events (its reader gets what was held, then an
/// error) and the peer is told to cancel, instead of memory growing.
#[tokio::test]
async fn an_answer_read_slower_than_it_arrives_is_bounded_and_cancelled() {
    let (conn, mut peer) = raw_peer();
    let answer = conn.request(RequestBody::ListModels).await.unwrap();
    // The peer reads the request, then floods its answer.
    let id = loop {
        let bytes = peer.next().await.unwrap().unwrap();
        if let Frame::Request { id, .. } = decode_frame(&bytes).unwrap() {
            break id;
        }
    };
    let (mut sink, mut stream) = peer.split();
    let flood = tokio::spawn(async move {
        for i in 0..(ANSWER_QUEUE + 100) {
            let event = Event::Delta {
                text: format!("{i}"),
                tokens: 1,
            };
            if sink
                .send(encode_frame(&Frame::Event { id, event }).unwrap())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // It is told to cancel.
    let cancelled = async {
        while let Some(Ok(bytes)) = stream.next().await {
            if matches!(decode_frame(&bytes), Ok(Frame::Cancel { id: c }) if c == id) {
                return;
            }
        }
        panic!("no cancel");
    };
    tokio::time::timeout(Duration::from_secs(20), cancelled)
        .await
        .unwrap();
    flood.await.unwrap();
    let events: Vec<Event> = answer.collect().await;
    assert_eq!(events.len(), ANSWER_QUEUE + 1);
    assert!(matches!(events.last(), Some(Event::Error(_))));
    assert!(!conn.is_closed());
}
