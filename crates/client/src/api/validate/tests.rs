use super::*;

fn err(body: &str) -> ApiError {
    chat(body.as_bytes()).unwrap_err()
}

#[test]
fn a_full_request_is_accepted() {
    let v = chat(br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
        "max_tokens":5,"temperature":0.2,"top_p":0.9,"stop":"x","seed":-1,"stream":true,"stream_options":{"include_usage":true},"user":"ignored"}"#).unwrap();
    assert!(v.stream && v.include_usage);
    assert_eq!(v.request.params.max_tokens, Some(5));
    assert_eq!(v.request.params.stop, vec!["x".to_string()]);
    assert_eq!(v.request.params.seed, Some(u64::MAX));
    let Input::Chat(m) = v.request.input else {
        panic!()
    };
    assert_eq!(m[1].content, "a\nb");
}

#[test]
fn logprobs_false_is_fine() {
    chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":false,"top_logprobs":0}"#)
        .unwrap();
}

#[test]
fn max_completion_tokens_wins() {
    let v = chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":7}"#).unwrap();
    assert_eq!(v.request.params.max_tokens, Some(7));
}

#[test]
fn errors_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("{", "parse the JSON"),
        ("[]", "JSON object"),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, "'model'"),
        (r#"{"model":"m"}"#, "'messages'"),
        (r#"{"model":"m","messages":[]}"#, "empty array"),
        (r#"{"model":"m","messages":"hi"}"#, "'messages'"),
        (
            r#"{"model":"m","messages":[{"role":"king","content":"x"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            "image_url",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            "temperature",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
            "'n'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
            "'stop'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
            "stream_options",
        ),
        (
            r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
            "'model'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
            "'logprobs' is not supported",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#,
            "'top_logprobs'",
        ),
    ];
    for (body, needle) in cases {
        let e = err(body);
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        assert!(
            e.message.contains(needle),
            "{body}: {:?} lacks {needle}",
            e.message
        );
    }
}

#[test]
fn invalid_utf8_is_named() {
    let e = chat(b"{\"model\":\"\xff\"}").unwrap_err();
    assert!(e.message.contains("UTF-8"), "{}", e.message);
}

#[test]
fn completion_prompt_rules() {
    assert!(completion(br#"{"model":"m","prompt":"hi"}"#).is_ok());
    assert!(completion(br#"{"model":"m","prompt":["hi"]}"#).is_ok());
    assert!(completion(br#"{"model":"m","prompt":["a","b"]}"#)
        .unwrap_err()
        .message
        .contains("one prompt"));
    assert!(completion(br#"{"model":"m"}"#)
        .unwrap_err()
        .message
        .contains("'prompt'"));
}
