//! Prefix affinity: which worker answered a conversation's last turn, so that
//! the next turn is sealed to it first (its engine still holds the
//! conversation's prompt in its KV cache, and reuses it). A turn is known by
//! the SHA-256 of its model and messages; the next turn's request carries
//! those same messages followed by the assistant's answer and a new user
//! message. Only hashes are kept, in this node's memory, bounded (the oldest
//! forgotten first). The proxy learns only that the first recipient is
//! preferred.

use cocoon_protocol::sync::LockRecover;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use cocoon_protocol::{ChatMessage, GenerateRequest, Input, ListedWorker};
use sha2::{Digest, Sha256};

type Key = [u8; 32];

/// Conversations remembered at most.
pub const REMEMBERED: usize = 10_000;

/// Conversation → the worker that answered its last turn.
pub(crate) struct Affinity {
    inner: Mutex<(HashMap<Key, ListedWorker>, VecDeque<Key>)>,
    capacity: usize,
}

impl Default for Affinity {
    fn default() -> Self {
        Self::new(REMEMBERED)
    }
}

fn key_of(model: &str, messages: &[ChatMessage]) -> Key {
    let mut hash = Sha256::new();
    hash.update(b"cocoon/affinity/v1");
    for part in std::iter::once(model).chain(
        messages
            .iter()
            .flat_map(|m| [m.role.as_str(), m.content.as_str()]),
    ) {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// What a request is known by when it is answered (`turn`) and which turn
/// it continues (`previous`), if it is a chat.
pub(crate) struct TurnKeys {
    turn: Option<Key>,
    previous: Option<Key>,
}

impl TurnKeys {
    pub fn of(request: &GenerateRequest) -> Self {
        let Input::Chat(messages) = &request.input else {
            return Self {
                turn: None,
                previous: None,
            };
        };
        let n = messages.len();
        // [..earlier turn.., assistant answer, new user message]
        let continues = n >= 3 && messages[n - 2].role == "assistant";
        Self {
            turn: Some(key_of(&request.model, messages)),
            previous: continues.then(|| key_of(&request.model, &messages[..n - 2])),
        }
    }
}

impl Affinity {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// The worker that answered the turn this request continues.
    pub fn previous(&self, keys: &TurnKeys) -> Option<ListedWorker> {
        let key = keys.previous.as_ref()?;
        let inner = self.inner.locked();
        inner.0.get(key).cloned()
    }

    /// `worker` answered the turn known by `keys`.
    pub fn remember(&self, keys: &TurnKeys, worker: ListedWorker) {
        let Some(key) = keys.turn else { return };
        let mut inner = self.inner.locked();
        let (map, order) = &mut *inner;
        if map.insert(key, worker).is_none() {
            order.push_back(key);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.locked().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(turns: &[(&str, &str)]) -> GenerateRequest {
        GenerateRequest {
            model: "m".into(),
            input: Input::Chat(
                turns
                    .iter()
                    .map(|(role, content)| ChatMessage::new(role.to_string(), content.to_string()))
                    .collect(),
            ),
            params: Default::default(),
        }
    }

    fn worker(n: u8) -> ListedWorker {
        ListedWorker {
            key: cocoon_protocol::WorkerKey {
                identity: vec![n; 44],
                sealing_key: [n; 32],
                evidence: None,
                configuration: None,
                anchor: None,
                gpus: Vec::new(),
            },
            price_coefficient: 1000,
            load_permille: 0,
        }
    }

    #[test]
    fn the_next_turn_finds_the_worker_of_the_last() {
        let affinity = Affinity::default();
        let first = chat(&[("system", "be brief"), ("user", "hi")]);
        assert!(affinity.previous(&TurnKeys::of(&first)).is_none());
        affinity.remember(&TurnKeys::of(&first), worker(7));
        let next = chat(&[
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "how are you?"),
        ]);
        let found = affinity.previous(&TurnKeys::of(&next)).unwrap();
        assert_eq!(found.key.sealing_key, [7; 32]);
        // Another conversation (other history) finds nothing.
        let other = chat(&[
            ("system", "be brief"),
            ("user", "hey"),
            ("assistant", "hello"),
            ("user", "how are you?"),
        ]);
        assert!(affinity.previous(&TurnKeys::of(&other)).is_none());
        // Field boundaries count: ("ab","c") is not ("a","bc").
        assert_ne!(
            key_of("m", &messages(&chat(&[("ab", "c")]))),
            key_of("m", &messages(&chat(&[("a", "bc")])))
        );
    }

    #[test]
    fn it_forgets_the_oldest_beyond_its_capacity() {
        let affinity = Affinity::new(3);
        for i in 0..5u8 {
            let turn = chat(&[("user", &i.to_string())]);
            affinity.remember(&TurnKeys::of(&turn), worker(i));
        }
        assert_eq!(affinity.len(), 3);
        let continues =
            |i: u8| chat(&[("user", &i.to_string()), ("assistant", "x"), ("user", "y")]);
        assert!(affinity.previous(&TurnKeys::of(&continues(0))).is_none());
        assert!(affinity.previous(&TurnKeys::of(&continues(4))).is_some());
    }

    fn messages(request: &GenerateRequest) -> Vec<ChatMessage> {
        match &request.input {
            Input::Chat(m) => m.clone(),
            Input::Prompt(_) => vec![],
        }
    }
}
