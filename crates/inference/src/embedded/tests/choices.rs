//! Several answers to one prompt (`n` > 1): the prompt is read once and its
//! cache copied to each answer's slot, and each answer is exactly what the
//! same request would give alone with the seed plus its index; usage counts
//! the prompt once and every answer's tokens; the events of each answer
//! follow its `Choice` marker.

use super::*;

/// Each answer's text, and the final `Done`.
async fn answers(engine: &EmbeddedEngine, request: GenerateRequest) -> (Vec<String>, Done) {
    let n = request.params.choices() as usize;
    let mut stream = engine.generate(request);
    let mut texts = vec![String::new(); n];
    let mut current = 0;
    while let Some(event) = stream.next().await {
        match event {
            Event::Choice(i) => current = i as usize,
            Event::Delta { text, .. } => texts[current].push_str(&text),
            Event::Done(done) => return (texts, done),
            // The prompt's counts, for the worker's running totals.
            Event::Usage(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    panic!("stream ended without Done");
}

fn several(n: u32, seed: u64, temperature: f32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(16),
        temperature: Some(temperature),
        seed: Some(seed),
        n: Some(n),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_answer_is_what_its_seed_gives_alone_and_usage_counts_them_all() {
    let engine = engine(4);
    let (texts, done) = answers(&engine, chat("the capital city", several(3, 40, 1.0))).await;
    assert_eq!(done.finishes.len(), 3);
    assert_eq!(done.finish_reason, done.finishes[0]);
    let mut completion = 0;
    let mut prompt = 0;
    for (i, text) in texts.iter().enumerate() {
        // Alone, on a fresh engine: no cache shared with the run above.
        let alone = engine_fresh(1);
        let (expected, single) = run(
            &alone,
            chat("the capital city", several(1, 40 + i as u64, 1.0)),
        )
        .await;
        assert_eq!(text, &expected, "answer {i}");
        assert_eq!(done.finishes[i], single.finish_reason);
        completion += single.usage.completion_tokens;
        prompt = single.usage.prompt_tokens;
    }
    assert_ne!(texts[0], texts[1], "sampled answers differ");
    assert_eq!(done.usage.completion_tokens, completion);
    assert_eq!(done.usage.prompt_tokens, prompt, "the shared prompt once");

    // Greedy: every answer is the one greedy answer.
    let (texts, _) = answers(&engine, chat("water and people", several(2, 1, 0.0))).await;
    let (greedy_text, _) = run(&engine_fresh(1), chat("water and people", greedy(16))).await;
    assert_eq!(texts, [greedy_text.clone(), greedy_text]);
}

#[tokio::test]
async fn several_answers_run_beside_other_requests() {
    let engine = engine(4);
    let other = run(&engine, chat("find my city", greedy(24)));
    let group = answers(&engine, chat("hello world", several(2, 9, 1.0)));
    let ((other_text, _), (texts, done)) = futures::join!(other, group);
    assert_eq!(done.finishes.len(), 2);
    let fresh = engine_fresh(1);
    assert_eq!(
        other_text,
        run(&fresh, chat("find my city", greedy(24))).await.0
    );
    for (i, text) in texts.iter().enumerate() {
        let alone = run(&fresh, chat("hello world", several(1, 9 + i as u64, 1.0)))
            .await
            .0;
        assert_eq!(text, &alone, "answer {i}");
    }
}

#[tokio::test]
async fn more_answers_than_sequences_are_refused_naming_n() {
    let engine = engine(2);
    let e = refused(&engine, chat("hi", several(3, 1, 1.0))).await;
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.starts_with("Invalid 'n': 3"), "{}", e.message);
    assert!(engine.models()[0].features.choices);
    assert!(!super::engine(1).models()[0].features.choices);
}

#[tokio::test]
async fn each_structured_answer_fits_its_schema() {
    let engine = engine(4);
    let params = SamplingParams {
        max_tokens: Some(120),
        format: schema_format(BOUNDED_SCHEMA),
        ..several(3, 5, 1.0)
    };
    let (texts, done) = answers(&engine, chat("give me json", params)).await;
    assert_eq!(done.finishes, [FinishReason::Stop; 3]);
    for text in &texts {
        valid_bounded(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    }
}
