//! Several answers to one prompt (`n` > 1): each answer is a sequence of
//! its own, and all of them write to the request's one event stream. Each
//! answer's events follow an [`Event::Choice`] marker whenever the answer
//! changes; `Done` goes out once, when the last answer ends, with the usage
//! of all of them (the prompt counted once: they share it) and why each
//! ended. A single answer writes exactly what it would alone: no markers.

use std::sync::{Arc, Mutex};

use cocoon_protocol::sync::LockRecover;
use cocoon_protocol::{AnswerCursor, Done, Event, FinishReason, Usage, WireError};
use tokio::sync::mpsc::UnboundedSender;

/// One answer's handle on its request's event stream.
pub(super) struct Out {
    events: UnboundedSender<Event>,
    index: u32,
    /// Shared by the answers of a request for several; `None` for one.
    group: Option<Arc<Mutex<Group>>>,
}

/// What the answers of one request share.
struct Group {
    /// The answer of the last event sent.
    cursor: AnswerCursor,
    /// Why each answer ended, once it has.
    finishes: Vec<Option<FinishReason>>,
    usage: Usage,
    /// The stream has ended (`Done` or an error went out).
    ended: bool,
}

impl Out {
    /// The handles of `n` answers writing to `events`.
    pub fn answers(events: UnboundedSender<Event>, n: u32) -> Vec<Out> {
        if n <= 1 {
            return vec![Out {
                events,
                index: 0,
                group: None,
            }];
        }
        let group = Arc::new(Mutex::new(Group {
            cursor: AnswerCursor::default(),
            finishes: vec![None; n as usize],
            usage: Usage::default(),
            ended: false,
        }));
        (0..n)
            .map(|index| Out {
                events: events.clone(),
                index,
                group: Some(group.clone()),
            })
            .collect()
    }

    /// The reader of the stream is gone (the request was cancelled).
    pub fn is_closed(&self) -> bool {
        self.events.is_closed()
    }

    /// Send one of this answer's events (after a `Choice` marker when the
    /// stream's last event was another answer's).
    pub fn send(&self, event: Event) {
        if let Some(group) = &self.group {
            let mut group = group.locked();
            if group.ended {
                return;
            }
            if let Some(marker) = group.cursor.to(self.index) {
                let _ = self.events.send(marker);
            }
        }
        let _ = self.events.send(event);
    }

    /// The prompt has been read: its counts, for the worker's running
    /// totals (from the first answer only: the others share it).
    pub fn prompt_read(&self, prompt_tokens: u64, cached_prompt_tokens: u64) {
        if self.index == 0 {
            let _ = self.events.send(Event::Usage(Usage {
                prompt_tokens,
                cached_prompt_tokens,
                ..Usage::default()
            }));
        }
    }

    /// This answer ended: alone, its `Done`; in a group, `Done` once all
    /// have, with their usage summed (the shared prompt once).
    pub fn finish(&self, reason: FinishReason, usage: Usage) {
        let Some(group) = &self.group else {
            let _ = self.events.send(done(reason, usage, Vec::new()));
            return;
        };
        let mut group = group.locked();
        if group.ended {
            return;
        }
        let u = &mut group.usage;
        if self.index == 0 {
            u.prompt_tokens = usage.prompt_tokens;
            u.cached_prompt_tokens = usage.cached_prompt_tokens;
        }
        u.completion_tokens += usage.completion_tokens;
        u.reasoning_tokens += usage.reasoning_tokens;
        group.finishes[self.index as usize] = Some(reason);
        if group.finishes.iter().all(Option::is_some) {
            group.ended = true;
            let finishes: Vec<FinishReason> = group.finishes.iter().flatten().copied().collect();
            let _ = self.events.send(done(finishes[0], group.usage, finishes));
        }
    }

    /// The request failed (once for all its answers).
    pub fn fail(&self, error: WireError) {
        if let Some(group) = &self.group {
            let mut group = group.locked();
            if group.ended {
                return;
            }
            group.ended = true;
        }
        let _ = self.events.send(Event::Error(error));
    }
}

fn done(reason: FinishReason, usage: Usage, finishes: Vec<FinishReason>) -> Event {
    Event::Done(Done {
        finish_reason: reason,
        usage,
        receipt: None,
        stamp: None,
        finishes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(completion: u64) -> Usage {
        Usage {
            prompt_tokens: 10,
            completion_tokens: completion,
            cached_prompt_tokens: 4,
            reasoning_tokens: 1,
        }
    }

    #[test]
    fn answers_are_marked_when_they_change_and_done_waits_for_all() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outs = Out::answers(tx, 3);
        let text = |t: &str| Event::Delta {
            text: t.into(),
            tokens: 1,
        };
        outs[0].send(text("a"));
        outs[1].send(text("b"));
        outs[1].send(text("c"));
        outs[2].finish(FinishReason::Length, usage(5));
        outs[0].finish(FinishReason::Stop, usage(2));
        assert!(rx.try_recv().is_ok_and(|e| e == text("a")));
        assert_eq!(rx.try_recv().unwrap(), Event::Choice(1));
        assert_eq!(rx.try_recv().unwrap(), text("b"));
        assert_eq!(rx.try_recv().unwrap(), text("c"));
        assert!(
            rx.try_recv().is_err(),
            "no Done before the last answer ends"
        );
        outs[1].finish(FinishReason::Stop, usage(3));
        let Event::Done(done) = rx.try_recv().unwrap() else {
            panic!("Done")
        };
        assert_eq!(
            done.finishes,
            [FinishReason::Stop, FinishReason::Stop, FinishReason::Length]
        );
        assert_eq!(done.usage.prompt_tokens, 10, "the shared prompt once");
        assert_eq!(done.usage.cached_prompt_tokens, 4);
        assert_eq!(done.usage.completion_tokens, 10);
        assert_eq!(done.usage.reasoning_tokens, 3);
        // Nothing after the end, and one failure for all.
        outs[0].fail(WireError::new(cocoon_protocol::ErrorKind::Internal, "x"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn one_answer_sends_no_markers() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = Out::answers(tx, 1).remove(0);
        out.finish(FinishReason::Stop, usage(2));
        let Event::Done(done) = rx.try_recv().unwrap() else {
            panic!("Done")
        };
        assert!(done.finishes.is_empty());
        assert_eq!(done.usage.completion_tokens, 2);
    }
}
