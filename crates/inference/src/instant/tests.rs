use cocoon_protocol::{ChatMessage, SamplingParams};

use super::*;

fn chat(text: &str, max_tokens: Option<u32>, stop: &[&str]) -> GenerateRequest {
    GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![
            ChatMessage::new("system", "be brief"),
            ChatMessage::new("user", text),
        ]),
        params: SamplingParams {
            max_tokens,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    }
}

async fn run(req: GenerateRequest) -> (String, Done) {
    let events: Vec<Event> = InstantEngine::new("m", 1)
        .generate(req)
        .filter(|e| futures::future::ready(!matches!(e, Event::Usage(_))))
        .collect()
        .await;
    let mut text = String::new();
    let mut tokens = 0u64;
    for e in &events[..events.len() - 1] {
        let Event::Delta { text: t, tokens: n } = e else {
            panic!("{e:?}")
        };
        text.push_str(t);
        tokens += *n as u64;
    }
    let Some(Event::Done(done)) = events.last().cloned() else {
        panic!("{events:?}")
    };
    assert!(
        tokens <= done.usage.completion_tokens,
        "deltas carry at most the generated tokens"
    );
    (text, done)
}

#[tokio::test]
async fn echoes_once_without_max_tokens() {
    let (text, done) = run(chat("hello there world", None, &[])).await;
    assert_eq!(text, "hello there world");
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(
        done.usage,
        Usage {
            prompt_tokens: 2 + 1 + 3 + 1,
            completion_tokens: 3,
            ..Usage::default()
        }
    );
}

#[tokio::test]
async fn cycles_to_exactly_max_tokens() {
    let (text, done) = run(chat("a b", Some(5), &[])).await;
    assert_eq!(text, "a b a b a");
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.usage.completion_tokens, 5);
}

#[tokio::test]
async fn stop_sequence_ends_with_stop() {
    let (text, done) = run(chat("one two three four", Some(50), &[" three"])).await;
    assert_eq!(text, "one two");
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.usage.completion_tokens, 3);
}

#[tokio::test]
async fn same_input_same_output() {
    let a = run(chat("x y z", Some(7), &[])).await;
    let b = run(chat("x y z", Some(7), &[])).await;
    assert_eq!(a.0, b.0);
}
