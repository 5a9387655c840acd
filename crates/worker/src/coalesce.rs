//! Tokens coalesced before they are sealed: the text an engine produces
//! within [`DEFAULT_WINDOW`] of a chunk's first token (or up to
//! [`MAX_CHUNK_TEXT`] bytes) goes into one sealed chunk, so the proxy does
//! not see where tokens begin and end, nor how many there are (token
//! lengths are enough to reconstruct much of an answer: Weiss et al.,
//! "What Was Your Prompt?", USENIX Security 2024). The price is at most one
//! window of extra latency per chunk.

use std::collections::VecDeque;
use std::time::Duration;

use cocoon_inference::Event;
use cocoon_protocol::{AnswerCursor, TokenLogprob};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::time::Instant;

/// How long a chunk's first token waits for more (`coalesce_ms`).
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(5);
/// Text bytes that close a chunk at once.
pub const MAX_CHUNK_TEXT: usize = 1024;

/// What one answer's window gathered.
#[derive(Default)]
struct Gathered {
    /// Reasoning (it comes before the answer's text).
    reasoning: String,
    reasoning_tokens: u32,
    text: String,
    tokens: u32,
    /// Log probabilities of the tokens gathered (when the request asked).
    logprobs: Vec<TokenLogprob>,
}

impl Gathered {
    fn has_text(&self) -> bool {
        !self.text.is_empty() || self.tokens > 0
    }

    fn is_empty(&self) -> bool {
        !self.has_text()
            && self.reasoning.is_empty()
            && self.reasoning_tokens == 0
            && self.logprobs.is_empty()
    }

    /// Queue what was gathered: reasoning, then the tokens' log
    /// probabilities, then their text.
    fn drain_into(&mut self, ready: &mut VecDeque<Event>) {
        if !self.reasoning.is_empty() || self.reasoning_tokens > 0 {
            ready.push_back(Event::Reasoning {
                text: std::mem::take(&mut self.reasoning),
                tokens: std::mem::take(&mut self.reasoning_tokens),
            });
        }
        if !self.logprobs.is_empty() {
            ready.push_back(Event::Logprobs(std::mem::take(&mut self.logprobs)));
        }
        if self.has_text() {
            ready.push_back(Event::Delta {
                text: std::mem::take(&mut self.text),
                tokens: std::mem::take(&mut self.tokens),
            });
        }
    }
}

struct State {
    events: BoxStream<'static, Event>,
    /// Per answer (`n` > 1 gives several), what the window gathered.
    gathered: Vec<Gathered>,
    /// The answer the engine's events are for now.
    current: u32,
    /// Where the events queued stand.
    sent: AnswerCursor,
    deadline: Option<Instant>,
    /// Events ready to go, in order.
    ready: VecDeque<Event>,
    ended: bool,
}

impl State {
    /// Queue what the window gathered, answer by answer, each after a
    /// `Choice` when it is not the answer of the event before.
    fn flush(&mut self) {
        self.deadline = None;
        for (index, gathered) in self.gathered.iter_mut().enumerate() {
            if gathered.is_empty() {
                continue;
            }
            self.ready.extend(self.sent.to(index as u32));
            gathered.drain_into(&mut self.ready);
        }
    }

    /// The current answer's buffers.
    fn here(&mut self) -> &mut Gathered {
        let index = self.current as usize;
        if self.gathered.len() <= index {
            self.gathered.resize_with(index + 1, Gathered::default);
        }
        &mut self.gathered[index]
    }

    /// Add to the current answer's buffers with `add` (which says how
    /// many bytes of text they now hold), in the window started by the
    /// first thing gathered; a full buffer closes the chunk at once.
    fn gather(&mut self, window: Duration, add: impl FnOnce(&mut Gathered) -> usize) {
        let full = add(self.here()) >= MAX_CHUNK_TEXT;
        self.start_window(window);
        if full {
            self.flush();
        }
    }

    fn start_window(&mut self, window: Duration) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + window);
        }
    }
}

/// `events` with the deltas (and log probabilities, and reasoning) of each
/// `window` merged into one chunk each per answer (a zero window changes
/// nothing); every other event passes unchanged, after the text before it.
pub fn coalesce(events: BoxStream<'static, Event>, window: Duration) -> BoxStream<'static, Event> {
    if window.is_zero() {
        return events;
    }
    let state = State {
        events,
        gathered: Vec::new(),
        current: 0,
        sent: AnswerCursor::default(),
        deadline: None,
        ready: VecDeque::new(),
        ended: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(event) = st.ready.pop_front() {
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
                None => st.flush(),
                Some(Some(Event::Delta { text, tokens })) => st.gather(window, |g| {
                    g.text.push_str(&text);
                    g.tokens = g.tokens.saturating_add(tokens);
                    g.text.len()
                }),
                Some(Some(Event::Reasoning { text, tokens })) => {
                    // Reasoning after answer text (a second thought) keeps
                    // its place.
                    if st.here().has_text() {
                        st.flush();
                    }
                    st.gather(window, |g| {
                        g.reasoning.push_str(&text);
                        g.reasoning_tokens = g.reasoning_tokens.saturating_add(tokens);
                        g.reasoning.len()
                    })
                }
                Some(Some(Event::Logprobs(logprobs))) => st.gather(window, |g| {
                    g.logprobs.extend(logprobs);
                    0
                }),
                // The engine moves to another answer: gathered apart.
                Some(Some(Event::Choice(index))) => st.current = index,
                Some(Some(other)) => {
                    st.flush();
                    if matches!(other, Event::ToolCall(_)) {
                        st.ready.extend(st.sent.to(st.current));
                    }
                    st.ready.push_back(other);
                }
                Some(None) => {
                    st.ended = true;
                    st.flush();
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
            finishes: Vec::new(),
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
    async fn log_probabilities_travel_in_the_same_window_as_their_text() {
        let logprob = |b: &str| {
            Event::Logprobs(vec![TokenLogprob {
                bytes: b.as_bytes().to_vec(),
                logprob: -0.5,
                top: Vec::new(),
            }])
        };
        let events =
            stream::iter([logprob("a"), delta("a"), logprob("b"), delta("b"), done()]).boxed();
        let out: Vec<Event> = coalesce(events, Duration::from_millis(5)).collect().await;
        assert_eq!(out.len(), 3, "one chunk of each, then Done: {out:?}");
        match &out[0] {
            Event::Logprobs(l) => assert_eq!(l.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[1], Event::Delta { text, tokens: 2 } if text == "ab"));
    }

    /// Each event in short: `r:` reasoning, `t:` text (with their token
    /// counts), `c:` the answer that follows, `done`.
    fn described(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Reasoning { text, tokens } => format!("r:{text}/{tokens}"),
                Event::Delta { text, tokens } => format!("t:{text}/{tokens}"),
                Event::Choice(i) => format!("c:{i}"),
                Event::Done(_) => "done".into(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn reasoning_is_coalesced_too_and_keeps_its_place() {
        let thought = |t: &str| Event::Reasoning {
            text: t.into(),
            tokens: 1,
        };
        let events = stream::iter([
            thought("a"),
            thought("b"),
            delta("c"),
            thought("d"),
            delta("e"),
            done(),
        ])
        .boxed();
        let out: Vec<Event> = coalesce(events, Duration::from_millis(5)).collect().await;
        let shown = described(&out);
        // One window each side of the answer text that came between.
        assert_eq!(shown, ["r:ab/2", "t:c/1", "r:d/1", "t:e/1", "done"]);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_interleaved_token_by_token_are_gathered_apart() {
        // Two answers, one token each in turn, as the batch loop makes them.
        let events = stream::iter([
            delta("a"),
            Event::Choice(1),
            delta("x"),
            Event::Choice(0),
            delta("b"),
            Event::Choice(1),
            delta("y"),
            done(),
        ])
        .boxed();
        let out: Vec<Event> = coalesce(events, Duration::from_millis(5)).collect().await;
        assert_eq!(described(&out), ["t:ab/2", "c:1", "t:xy/2", "done"]);
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
