//! Deadlines on the worker hop: an answer's first event must come within
//! `first_token`, each later one within `idle` of the one before; a worker
//! that misses one is cut off (its stream dropped, which cancels the
//! generation at the worker) and the client node gets a `Timeout` error.

use std::time::Duration;

use cocoon_protocol::{ErrorKind, Event, WireError};
use futures::stream::{self, BoxStream, Stream};
use futures::StreamExt;

/// The proxy's per-hop deadlines towards workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopTimeouts {
    /// From forwarding a request to the worker's first answer event.
    pub first_token: Duration,
    /// Between two answer events.
    pub idle: Duration,
}

impl Default for HopTimeouts {
    fn default() -> Self {
        Self {
            first_token: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

impl HopTimeouts {
    /// `answer`, ended with a `Timeout` error when a deadline passes.
    pub fn apply(
        self,
        answer: impl Stream<Item = Event> + Send + 'static,
    ) -> BoxStream<'static, Event> {
        let answer = answer.boxed();
        stream::unfold(Some((answer, true)), move |state| async move {
            let (mut answer, first) = state?;
            let (limit, what) = if first {
                (self.first_token, "its first token")
            } else {
                (self.idle, "its next token")
            };
            match tokio::time::timeout(limit, answer.next()).await {
                Ok(Some(event)) => {
                    let next = (!event.is_terminal()).then_some((answer, false));
                    Some((event, next))
                }
                Ok(None) => None,
                Err(_) => Some((
                    Event::Error(WireError::new(
                        ErrorKind::Timeout,
                        format!("the worker did not send {what} within {limit:?}"),
                    )),
                    None,
                )),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(ms: u64) -> HopTimeouts {
        HopTimeouts {
            first_token: Duration::from_millis(ms),
            idle: Duration::from_millis(ms),
        }
    }

    fn chunk() -> Event {
        Event::Sealed { ciphertext: vec![] }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_is_cut_off_with_a_timeout() {
        let never = stream::pending::<Event>();
        let events: Vec<Event> = timeouts(50).apply(never).collect().await;
        assert!(matches!(&events[..], [Event::Error(e)] if e.kind == ErrorKind::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_the_first_token_ends_the_answer() {
        let stalls = stream::iter([chunk()]).chain(stream::pending());
        let events: Vec<Event> = timeouts(50).apply(stalls).collect().await;
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1], Event::Error(e) if e.kind == ErrorKind::Timeout
            && e.message.contains("next token"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_answer_passes_unchanged_and_ends_at_its_terminal_event() {
        let steady = stream::iter([chunk(), chunk()])
            .then(|e| async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                e
            })
            .chain(stream::iter([Event::Error(WireError::new(
                ErrorKind::Upstream,
                "end",
            ))]))
            .chain(stream::pending());
        let events: Vec<Event> = timeouts(50).apply(steady).collect().await;
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[2], Event::Error(e) if e.kind == ErrorKind::Upstream));
    }
}
