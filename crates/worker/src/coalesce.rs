//! Tokens coalesced before they are sealed: the text an engine produces
//! within [`DEFAULT_WINDOW`] of a chunk's first token (or up to
//! [`MAX_CHUNK_TEXT`] bytes) goes into one sealed chunk, so the proxy does
//! not see where tokens begin and end, nor how many there are (token
//! lengths are enough to reconstruct much of an answer: Weiss et al.,
//! "What Was Your Prompt?", USENIX Security 2024). The price is at most one
//! window of extra latency per chunk.

use std::time::Duration;

use cocoon_inference::Event;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::time::Instant;

/// How long a chunk's first token waits for more (`coalesce_ms`).
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(5);
/// Text bytes that close a chunk at once.
pub const MAX_CHUNK_TEXT: usize = 1024;

struct State {
    events: BoxStream<'static, Event>,
    text: String,
    tokens: u32,
    deadline: Option<Instant>,
    /// An event held while the text before it is sent.
    held: Option<Event>,
    ended: bool,
}

impl State {
    fn flush(&mut self) -> Event {
        self.deadline = None;
        Event::Delta {
            text: std::mem::take(&mut self.text),
            tokens: std::mem::take(&mut self.tokens),
        }
    }

    fn pending(&self) -> bool {
        self.deadline.is_some()
    }
}

/// `events` with the deltas of each `window` merged into one (a zero window
/// changes nothing); every other event passes unchanged, after the text
/// before it.
pub fn coalesce(events: BoxStream<'static, Event>, window: Duration) -> BoxStream<'static, Event> {
    if window.is_zero() {
        return events;
    }
    let state = State {
        events,
        text: String::new(),
        tokens: 0,
        deadline: None,
        held: None,
        ended: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(event) = st.held.take() {
                return Some((event, st));
            }
            if st.ended {
                return None;
            }
            let next = match st.deadline {
                Some(deadline) => tokio::select! {
                    next = st.events.next() => Some(next),
                    _ = tokio::time::sleep_until(deadline) => None,
                },
                None => Some(st.events.next().await),
            };
            match next {
                // The window passed: send what it gathered.
                None => return Some((st.flush(), st)),
                Some(Some(Event::Delta { text, tokens })) => {
                    st.text.push_str(&text);
                    st.tokens = st.tokens.saturating_add(tokens);
                    if st.deadline.is_none() {
                        st.deadline = Some(Instant::now() + window);
                    }
                    if st.text.len() >= MAX_CHUNK_TEXT {
                        return Some((st.flush(), st));
                    }
                }
                Some(Some(other)) => {
                    if st.pending() {
                        st.held = Some(other);
                        return Some((st.flush(), st));
                    }
                    return Some((other, st));
                }
                Some(None) => {
                    st.ended = true;
                    if st.pending() {
                        return Some((st.flush(), st));
                    }
                    return None;
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::{Done, FinishReason, Usage};

    fn delta(text: &str) -> Event {
        Event::Delta {
            text: text.into(),
            tokens: 1,
        }
    }

    fn done() -> Event {
        Event::Done(Done {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            receipt: None,
            stamp: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_within_a_window_become_one_chunk() {
        // Three tokens at once, a pause, two more, the end.
        let events = stream::iter([delta("a"), delta("b"), delta("c")])
            .chain(stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                delta("d")
            }))
            .chain(stream::iter([delta("e"), done()]))
            .boxed();
        let out: Vec<Event> = coalesce(events, Duration::from_millis(5)).collect().await;
        let texts: Vec<(String, u32)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Delta { text, tokens } => Some((text.clone(), *tokens)),
                _ => None,
            })
            .collect();
        assert_eq!(texts, vec![("abc".into(), 3), ("de".into(), 2)]);
        assert!(matches!(out.last(), Some(Event::Done(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_text_closes_its_chunk_at_once_and_a_zero_window_changes_nothing() {
        let long = "x".repeat(MAX_CHUNK_TEXT);
        let events = stream::iter([delta(&long), delta("y"), done()]).boxed();
        let out: Vec<Event> = coalesce(events, Duration::from_secs(60)).collect().await;
        assert_eq!(out.len(), 3, "{out:?}");
        let events = stream::iter([delta("a"), delta("b"), done()]).boxed();
        let out: Vec<Event> = coalesce(events, Duration::ZERO).collect().await;
        assert_eq!(out.len(), 3);
    }
}
