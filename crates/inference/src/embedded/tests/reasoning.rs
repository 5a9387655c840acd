//! A reasoning model (generated, with `<think>` / `</think>` tokens and a
//! template that opens a reasoning section): its thinking comes as
//! `Reasoning` events apart from the answer's text, never with the marker
//! tokens' text; asked not to think, it answers at once; a structured
//! answer is held to its shape only after the reasoning.

use super::*;
use crate::tiny_model::write_reasoning_model;
use cocoon_protocol::{Thinking, TokenLogprob};

fn reasoner_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cocoon-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reasoner.gguf");
        write_reasoning_model(&path, ModelShape::TINY, 7).unwrap();
        path
    })
    .clone()
}

fn reasoner(max_sequences: u32) -> EmbeddedEngine {
    let mut config = EmbeddedConfig::new(reasoner_path(), "tiny");
    config.max_sequences = max_sequences;
    config.context_tokens = 256;
    config.threads = 1;
    EmbeddedEngine::load(config).expect("reasoning model loads")
}

/// One answer, its parts apart.
#[derive(Debug, Default)]
struct Parts {
    reasoning: String,
    text: String,
    logprobs: Vec<TokenLogprob>,
    /// Kinds of the events in order: 'r'easoning, 't'ext, 'l'ogprobs.
    order: String,
    /// Tokens the text and reasoning events said they carried.
    event_tokens: u64,
}

async fn parts(engine: &EmbeddedEngine, request: GenerateRequest) -> (Parts, Done) {
    let mut stream = engine.generate(request);
    let mut p = Parts::default();
    while let Some(event) = stream.next().await {
        match event {
            Event::Reasoning { text, tokens } => {
                p.reasoning.push_str(&text);
                p.event_tokens += u64::from(tokens);
                p.order.push('r');
            }
            Event::Delta { text, tokens } => {
                p.text.push_str(&text);
                p.event_tokens += u64::from(tokens);
                p.order.push('t');
            }
            Event::Logprobs(l) => {
                p.logprobs.extend(l);
                p.order.push('l');
            }
            Event::Done(done) => return (p, done),
            // The prompt's counts, for the worker's running totals.
            Event::Usage(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    panic!("stream ended without Done");
}

fn sampled(seed: u64, max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        temperature: Some(1.0),
        seed: Some(seed),
        ..Default::default()
    }
}

#[tokio::test]
async fn reasoning_comes_apart_from_the_answer_without_its_markers() {
    let engine = reasoner(4);
    assert!(engine.models()[0].features.reasoning);
    let runs = (1..=8u64).map(|seed| parts(&engine, chat("the capital city", sampled(seed, 48))));
    let mut both = 0;
    for (p, done) in futures::future::join_all(runs).await {
        for part in [&p.reasoning, &p.text] {
            assert!(
                !part.contains("<think>") && !part.contains("</think>"),
                "{p:?}"
            );
        }
        // The model starts inside the section the template opened: every
        // answer begins with reasoning tokens (at least the closing marker).
        assert!(done.usage.reasoning_tokens >= 1, "{done:?}");
        assert!(done.usage.reasoning_tokens <= done.usage.completion_tokens);
        // Reasoning first, then the answer (this model never reopens).
        let first_text = p.order.find('t').unwrap_or(p.order.len());
        assert!(!p.order[first_text..].contains('r'), "{}", p.order);
        if p.text.is_empty() {
            // Cut while still thinking: all of it was reasoning.
            assert_eq!(done.finish_reason, FinishReason::Length, "{p:?}");
        }
        if !p.text.is_empty() && !p.reasoning.is_empty() {
            both += 1;
            assert!(done.usage.reasoning_tokens < done.usage.completion_tokens);
        }
        // Every token is accounted for in some event but a final
        // end-of-turn token and marker-only tails.
        assert!(p.event_tokens <= done.usage.completion_tokens);
    }
    assert!(both >= 2, "most answers think, then answer ({both} of 8)");
}

#[tokio::test]
async fn asked_not_to_think_the_answer_is_all_text() {
    let engine = reasoner(2);
    let off = |seed| SamplingParams {
        thinking: Some(Thinking {
            enabled: Some(false),
            effort: None,
        }),
        ..sampled(seed, 24)
    };
    for seed in 1..=4u64 {
        let (p, done) = parts(&engine, chat("the capital city", off(seed))).await;
        // The template wrote an empty, closed section: the answer starts
        // with text (unless the model opens a new section itself).
        assert!(p.order.starts_with('t'), "{p:?} {done:?}");
    }
    // Thinking by default (the template's): reasoning first.
    let (p, _) = parts(&engine, chat("the capital city", sampled(1, 24))).await;
    assert!(p.order.starts_with('r'), "{p:?}");
}

#[tokio::test]
async fn a_structured_answer_follows_free_reasoning_and_logprobs_cover_the_answer_only() {
    let engine = reasoner(4);
    let runs = (1..=6u64).map(|seed| {
        let params = SamplingParams {
            format: schema_format(BOUNDED_SCHEMA),
            logprobs: Some(2),
            ..sampled(seed, 80)
        };
        parts(&engine, chat("an object please", params))
    });
    let mut thought_then_answered = 0;
    for (p, done) in futures::future::join_all(runs).await {
        // The reasoning is free text (noise), never held to the schema ...
        assert!(valid_bounded(&p.reasoning).is_err(), "{p:?}");
        if !p.text.is_empty() {
            // ... and the answer after it fits the schema.
            assert_eq!(done.finish_reason, FinishReason::Stop, "{p:?}");
            valid_bounded(&p.text).unwrap_or_else(|e| panic!("{e}: {p:?}"));
            if !p.reasoning.is_empty() {
                thought_then_answered += 1;
            }
        } else {
            assert_eq!(done.finish_reason, FinishReason::Length, "{p:?}");
        }
        // Log probabilities spell the answer, not the reasoning.
        let spelled: Vec<u8> = p.logprobs.iter().flat_map(|e| e.bytes.clone()).collect();
        assert_eq!(String::from_utf8_lossy(&spelled), p.text, "{p:?}");
    }
    assert!(thought_then_answered >= 2, "{thought_then_answered} of 6");
}

#[tokio::test]
async fn raw_prompts_are_not_split() {
    // Completions have no reasoning field: the text is all there is.
    let engine = reasoner(1);
    let request = GenerateRequest {
        model: "tiny".into(),
        input: Input::Prompt("<think>\nthe capital".into()),
        params: sampled(3, 24),
    };
    let (p, _) = parts(&engine, request).await;
    assert!(p.reasoning.is_empty() && !p.order.contains('r'), "{p:?}");
}
