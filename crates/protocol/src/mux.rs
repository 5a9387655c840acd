//! Many concurrent request streams over one connection.
//!
//! Each side may send requests; answers are streams of [`Event`]s tagged with the
//! request's id. A [`ResponseStream`] dropped before its terminal event sends
//! `Cancel`, and a received `Cancel` aborts the task serving that request, so a
//! hang-up at the edge stops work at the far end. Pings keep the connection alive;
//! a peer silent for `idle_timeout` is dropped. Control frames (cancel, ping,
//! announce) overtake queued data so they are never stuck behind a long answer.
//! Every queue is bounded: control frames at [`CONTROL_QUEUE`] (a peer that
//! lets more pile up, say by pinging without reading, is disconnected), each
//! answer at [`ANSWER_QUEUE`] unread events (past it the answer is cut and
//! cancelled at the peer), data frames by the writer's channel.

use crate::sync::LockRecover;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// Control frames (pongs, cancels, refusals, announcements, goodbye)
/// queued for the writer at most; a peer that lets more pile up is not
/// reading and is disconnected.
pub const CONTROL_QUEUE: usize = 1024;
/// Events of one answer held for a reader that has not taken them yet; an
/// answer arriving faster than it is read is cancelled past this.
pub const ANSWER_QUEUE: usize = 16 * 1024;

use crate::codec::{decode_frame, encode_frame, framing_error};
use crate::tls::Fingerprint;
use crate::{Announce, ErrorKind, Event, Frame, Hello, ProtocolError, RequestBody, WireError};

/// Serves the requests a peer sends on a connection.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request. The stream must end with a terminal event; dropping it
    /// (on `Cancel` or connection loss) must stop the work behind it.
    fn serve(&self, conn: &Connection, body: RequestBody) -> BoxStream<'static, Event>;

    /// A worker's offer arrived on this connection.
    fn on_announce(&self, conn: &Connection, announce: Announce) {
        let _ = (conn, announce);
    }
}

/// Timing and size limits of one connection.
#[derive(Debug, Clone)]
pub struct MuxOptions {
    pub keepalive_interval: Duration,
    /// Close the connection when nothing arrived for this long.
    pub idle_timeout: Duration,
    /// Requests from the peer served at once; more are answered `Overloaded`.
    pub max_incoming: usize,
    /// Dialling (TCP connect, TLS handshake, hello) may take this long.
    pub connect_timeout: Duration,
}

impl Default for MuxOptions {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(35),
            max_incoming: 4096,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A live, multiplexed connection to a peer. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    peer: Hello,
    peer_key: Option<Fingerprint>,
    data_tx: mpsc::Sender<Frame>,
    control_tx: mpsc::Sender<Frame>,
    next_id: AtomicU64,
    outgoing: Mutex<HashMap<u64, mpsc::Sender<Event>>>,
    incoming: Mutex<HashMap<u64, AbortHandle>>,
    closed: CancellationToken,
    close_reason: Mutex<Option<String>>,
    max_incoming: usize,
}

impl Connection {
    /// Start serving a framed stream whose hello exchange is done.
    pub fn spawn<S>(
        framed: Framed<S, LengthDelimitedCodec>,
        peer: Hello,
        peer_key: Option<Fingerprint>,
        handler: Arc<dyn Handler>,
        options: MuxOptions,
    ) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let max_frame = framed.codec().max_frame_length();
        let (data_tx, data_rx) = mpsc::channel(256);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let conn = Connection {
            shared: Arc::new(Shared {
                peer,
                peer_key,
                data_tx,
                control_tx,
                next_id: AtomicU64::new(1),
                outgoing: Mutex::new(HashMap::new()),
                incoming: Mutex::new(HashMap::new()),
                closed: CancellationToken::new(),
                close_reason: Mutex::new(None),
                max_incoming: options.max_incoming,
            }),
        };
        let (sink, stream) = framed.split();
        tokio::spawn(write_loop(conn.clone(), sink, data_rx, control_rx));
        tokio::spawn(read_loop(
            conn.clone(),
            stream,
            handler,
            options.idle_timeout,
            max_frame,
        ));
        tokio::spawn(ping_loop(conn.clone(), options.keepalive_interval));
        conn
    }

    /// The peer's hello.
    pub fn peer(&self) -> &Hello {
        &self.shared.peer
    }

    /// The peer's TLS key fingerprint, when the connection is over TLS.
    pub fn peer_key(&self) -> Option<&Fingerprint> {
        self.shared.peer_key.as_ref()
    }

    /// Send a request whose answer is one event (a list, terms, a voucher)
    /// and wait for it at most `timeout`; an `Error` event is an `Err`.
    pub async fn ask(&self, body: RequestBody, timeout: Duration) -> Result<Event, WireError> {
        let upstream = |e: String| WireError::new(ErrorKind::Upstream, e);
        let mut answer = self
            .request(body)
            .await
            .map_err(|e| upstream(e.to_string()))?;
        let event = tokio::time::timeout(timeout, answer.next())
            .await
            .map_err(|_| {
                WireError::new(
                    ErrorKind::Timeout,
                    format!("the peer did not answer within {} s", timeout.as_secs()),
                )
            })?
            .ok_or_else(|| upstream("the peer closed the request without an answer".into()))?;
        match event {
            Event::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Send a request; its answer arrives on the returned stream.
    pub async fn request(&self, body: RequestBody) -> Result<ResponseStream, ProtocolError> {
        if self.is_closed() {
            return Err(ProtocolError::Closed);
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ANSWER_QUEUE);
        self.shared.outgoing.locked().insert(id, tx);
        let stream = ResponseStream {
            id,
            rx,
            shared: self.shared.clone(),
            done: false,
        };
        self.shared
            .data_tx
            .send(Frame::Request { id, body })
            .await
            .map_err(|_| ProtocolError::Closed)?;
        Ok(stream)
    }

    /// Send a worker's offer (worker -> proxy).
    pub fn announce(&self, announce: Announce) -> Result<(), ProtocolError> {
        if self.is_closed() {
            return Err(ProtocolError::Closed);
        }
        self.control(Frame::Announce(announce));
        if self.is_closed() {
            return Err(ProtocolError::Closed);
        }
        Ok(())
    }

    /// Requests this side has sent that are not answered yet.
    pub fn outgoing_in_flight(&self) -> usize {
        self.shared.outgoing.locked().len()
    }

    /// Peer requests this side is serving now.
    pub fn incoming_in_flight(&self) -> usize {
        self.shared.incoming.locked().len()
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the connection is closed, by either side.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.close_reason.locked().clone()
    }

    /// Say goodbye and close; open streams on both sides end with an error.
    pub fn close(&self, reason: &str) {
        if self
            .shared
            .control_tx
            .try_send(Frame::Goodbye {
                reason: reason.to_string(),
            })
            .is_err()
        {
            // The peer is not reading: no goodbye can reach it.
            self.shutdown(reason);
            return;
        }
        // The writer closes after sending the goodbye; make sure we stop even if it
        // is stuck on a dead socket.
        let conn = self.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            conn.shutdown(&reason);
        });
    }

    /// Tear down local state: fail our open requests, stop serving the peer's.
    fn shutdown(&self, reason: &str) {
        {
            let mut slot = self.shared.close_reason.locked();
            if slot.is_none() {
                *slot = Some(reason.to_string());
            }
        }
        self.shared.closed.cancel();
        let outgoing: Vec<_> = self.shared.outgoing.locked().drain().collect();
        for (_, tx) in outgoing {
            let _ = tx.try_send(Event::Error(WireError::new(
                ErrorKind::Upstream,
                format!("connection to {:?} lost: {reason}", self.shared.peer.role),
            )));
        }
        let incoming: Vec<_> = self.shared.incoming.locked().drain().collect();
        for (_, task) in incoming {
            task.abort();
        }
    }

    fn serve_incoming(&self, handler: &Arc<dyn Handler>, id: u64, body: RequestBody) {
        let refusal = {
            let incoming = self.shared.incoming.locked();
            if incoming.contains_key(&id) {
                Some(WireError::new(
                    ErrorKind::InvalidRequest,
                    format!("request id {id} already open"),
                ))
            } else if incoming.len() >= self.shared.max_incoming {
                Some(WireError::new(
                    ErrorKind::Overloaded,
                    "too many concurrent requests on this connection",
                ))
            } else {
                None
            }
        };
        if let Some(error) = refusal {
            self.control(Frame::Event {
                id,
                event: Event::Error(error),
            });
            return;
        }
        // Called without holding any lock: handlers may inspect the connection.
        // A handler that panics fails its request, never the connection.
        let served =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.serve(self, body)));
        let mut events = match served {
            Ok(events) => events,
            Err(_) => {
                tracing::error!(id, "a request handler panicked");
                futures::stream::iter([Event::Error(WireError::new(
                    ErrorKind::Internal,
                    "the request's handler failed",
                ))])
                .boxed()
            }
        };
        let mut incoming = self.shared.incoming.locked();
        let conn = self.clone();
        let task = tokio::spawn(async move {
            let mut finished = false;
            loop {
                let next = std::panic::AssertUnwindSafe(events.next())
                    .catch_unwind()
                    .await;
                let event = match next {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::error!(id, "a request's answer panicked");
                        finished = true;
                        let event = Event::Error(WireError::new(
                            ErrorKind::Internal,
                            "the request's answer failed",
                        ));
                        let _ = conn.shared.data_tx.send(Frame::Event { id, event }).await;
                        break;
                    }
                };
                finished = event.is_terminal();
                if conn
                    .shared
                    .data_tx
                    .send(Frame::Event { id, event })
                    .await
                    .is_err()
                    || finished
                {
                    break;
                }
            }
            if !finished {
                let event = Event::Error(WireError::new(
                    ErrorKind::Internal,
                    "answer ended without a result",
                ));
                let _ = conn.shared.data_tx.send(Frame::Event { id, event }).await;
            }
            conn.shared.incoming.locked().remove(&id);
        });
        incoming.insert(id, task.abort_handle());
    }

    fn deliver(&self, id: u64, event: Event) {
        let mut outgoing = self.shared.outgoing.locked();
        let terminal = event.is_terminal();
        let Some(tx) = outgoing.get(&id) else {
            // An event for an unknown id belongs to a request we already cancelled.
            return;
        };
        match tx.try_send(event) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                if terminal {
                    outgoing.remove(&id);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Read more slowly than the peer sends: the answer is cut
                // (its reader gets an error after what it has) and the
                // peer told to stop, rather than buffered without bound.
                outgoing.remove(&id);
                drop(outgoing);
                tracing::warn!(id, "an answer arrived faster than it was read; cancelled");
                self.control(Frame::Cancel { id });
            }
        }
    }

    /// Queue a control frame; a peer that does not read what it is sent
    /// (its control queue full: pings, cancels, refusals it never takes)
    /// is disconnected instead of buffered for.
    fn control(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.shared.control_tx.try_send(frame) {
            self.shutdown("the peer does not read what it is sent (control queue full)");
        }
    }
}

async fn write_loop<S>(
    conn: Connection,
    mut sink: futures::stream::SplitSink<Framed<S, LengthDelimitedCodec>, bytes::Bytes>,
    mut data_rx: mpsc::Receiver<Frame>,
    mut control_rx: mpsc::Receiver<Frame>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let closed = conn.shared.closed.clone();
    loop {
        let frame = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            Some(frame) = control_rx.recv() => frame,
            Some(frame) = data_rx.recv() => frame,
            else => break,
        };
        let goodbye = matches!(frame, Frame::Goodbye { .. });
        let result = async {
            sink.feed(encode_frame(&frame)?).await?;
            // Batch whatever else is already queued into the same flush.
            for _ in 0..64 {
                let next = control_rx.try_recv().or_else(|_| data_rx.try_recv());
                match next {
                    Ok(frame) => sink.feed(encode_frame(&frame)?).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await?;
            Ok::<_, ProtocolError>(())
        }
        .await;
        if let Err(e) = result {
            conn.shutdown(&format!("write failed: {e}"));
            break;
        }
        if goodbye {
            conn.shutdown("closed by this node");
            break;
        }
    }
    let _ = sink.close().await;
}

async fn read_loop<S>(
    conn: Connection,
    mut stream: futures::stream::SplitStream<Framed<S, LengthDelimitedCodec>>,
    handler: Arc<dyn Handler>,
    idle_timeout: Duration,
    max_frame: usize,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let closed = conn.shared.closed.clone();
    let reason = loop {
        let next = tokio::select! {
            _ = closed.cancelled() => return,
            next = tokio::time::timeout(idle_timeout, stream.next()) => next,
        };
        let bytes = match next {
            Err(_) => break format!("peer silent for {idle_timeout:?}"),
            Ok(None) => break "peer closed the connection".to_string(),
            Ok(Some(Err(e))) => break framing_error(e, max_frame).to_string(),
            Ok(Some(Ok(bytes))) => bytes,
        };
        let frame = match decode_frame(&bytes) {
            Ok(frame) => frame,
            Err(e) => break e.to_string(),
        };
        match frame {
            Frame::Request { id, body } => conn.serve_incoming(&handler, id, body),
            Frame::Event { id, event } => conn.deliver(id, event),
            Frame::Cancel { id } => {
                if let Some(task) = conn.shared.incoming.locked().remove(&id) {
                    task.abort();
                }
            }
            Frame::Announce(announce) => {
                let announced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.on_announce(&conn, announce)
                }));
                if announced.is_err() {
                    break "handling the peer's announcement failed".to_string();
                }
            }
            Frame::Ping(nonce) => conn.control(Frame::Pong(nonce)),
            Frame::Pong(_) => {}
            Frame::Goodbye { reason } => break format!("peer said goodbye: {reason}"),
        }
    };
    tracing::debug!(peer = ?conn.peer().role, %reason, "connection closed");
    conn.shutdown(&reason);
}

async fn ping_loop(conn: Connection, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = ticker.tick() => {
                nonce += 1;
                if conn.shared.control_tx.is_closed() {
                    return;
                }
                conn.control(Frame::Ping(nonce));
            }
        }
    }
}

/// The answer to one request. Dropping it before the end cancels the request at the
/// peer. If the connection is lost, it ends with an `Upstream` error event.
pub struct ResponseStream {
    id: u64,
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    done: bool,
}

impl ResponseStream {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Stream for ResponseStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.done = event.is_terminal();
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Event::Error(WireError::new(
                    ErrorKind::Upstream,
                    "connection lost before the answer ended",
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.shared.outgoing.locked().remove(&self.id);
        if !self.shared.closed.is_cancelled() {
            // Our own cancel: a full queue means the peer is not reading
            // (its pongs will tell); this node dropping many streams at
            // once is no reason to disconnect.
            let _ = self
                .shared
                .control_tx
                .try_send(Frame::Cancel { id: self.id });
        }
    }
}

#[cfg(test)]
mod tests;
