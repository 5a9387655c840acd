use super::*;

fn err(body: &str) -> ApiError {
    chat(body.as_bytes()).unwrap_err()
}

#[test]
fn several_answers_are_asked_on_chats_and_budgeted_in_full() {
    let v =
        chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3,"max_tokens":10}"#)
            .unwrap();
    assert_eq!(v.request.params.choices(), 3);
    assert!(v.request.needs().choices);
    // What the proxy is shown and holds the receipt to: every answer's tokens.
    assert_eq!(v.request.params.completion_budget(), Some(30));
    let e = completion(br#"{"model":"m","prompt":"x","n":2}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("n"));
    assert!(
        e.message.contains("/v1/chat/completions only"),
        "{}",
        e.message
    );
    completion(br#"{"model":"m","prompt":"x","n":1}"#).unwrap();
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
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
            "'n'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":129}"#,
            "'n'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
            "'stop'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"0123456789012345678901234567890123"}"#,
            "'stop': a sequence of 34 bytes",
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
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":3}"#,
            "'logprobs': expected a boolean",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#,
            "'top_logprobs' requires 'logprobs'",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}"#,
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

#[test]
fn response_formats_become_output_formats() {
    let with = |format: &str| {
        chat(format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"response_format":{format}}}"#).as_bytes())
    };
    assert_eq!(
        with(r#"{"type":"text"}"#).unwrap().request.params.format,
        None
    );
    let v = with(r#"{"type":"json_object"}"#).unwrap();
    assert_eq!(v.request.params.format, Some(OutputFormat::JsonObject));
    assert!(v.request.needs().structured_outputs);
    let v = with(r#"{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":{"type":"object","properties":{"n":{"type":"integer"}}}}}"#).unwrap();
    let Some(OutputFormat::JsonSchema {
        name,
        schema,
        strict,
    }) = v.request.params.format
    else {
        panic!("not a schema")
    };
    assert_eq!((name.as_str(), strict), ("answer", true));
    let schema: Value = serde_json::from_str(&schema).unwrap();
    assert_eq!(schema["properties"]["n"]["type"], "integer");
}

#[test]
fn bad_response_formats_name_the_field() {
    let param = |format: &str| {
        chat(format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"response_format":{format}}}"#).as_bytes())
            .unwrap_err()
            .param
            .unwrap_or_default()
    };
    assert_eq!(param(r#""json""#), "response_format");
    assert_eq!(param(r#"{"type":"yaml"}"#), "response_format.type");
    assert_eq!(param(r#"{"json_schema":{}}"#), "response_format.type");
    assert_eq!(
        param(r#"{"type":"json_schema"}"#),
        "response_format.json_schema"
    );
    assert_eq!(
        param(r#"{"type":"json_schema","json_schema":{"schema":{}}}"#),
        "response_format.json_schema.name"
    );
    assert_eq!(
        param(r#"{"type":"json_schema","json_schema":{"name":"a b","schema":{}}}"#),
        "response_format.json_schema.name"
    );
    assert_eq!(
        param(r#"{"type":"json_schema","json_schema":{"name":"a","schema":"{}"}}"#),
        "response_format.json_schema.schema"
    );
    assert_eq!(
        param(r#"{"type":"json_schema","json_schema":{"name":"a","schema":{},"strict":"yes"}}"#),
        "response_format.json_schema.strict"
    );
    assert_eq!(
        param(r#"{"type":"json_schema","json_schema":{"name":"a","schema":{},"stirct":true}}"#),
        "response_format.json_schema.stirct"
    );
    assert_eq!(
        param(r#"{"type":"json_object","schema":{}}"#),
        "response_format.schema"
    );
}

fn with_tools(extra: &str) -> Result<Validated, ApiError> {
    chat(format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":[{{"type":"function","function":{{"name":"get_weather","description":"d","parameters":{{"type":"object","properties":{{"city":{{"type":"string"}}}}}}}}}},{{"type":"function","function":{{"name":"now"}}}}]{extra}}}"#).as_bytes())
}

#[test]
fn tools_become_the_protocol_s_tools() {
    use cocoon_protocol::ToolChoice;
    let v = with_tools("").unwrap();
    let tools = v.request.params.tools.clone().unwrap();
    assert_eq!(tools.choice, ToolChoice::Auto);
    assert!(tools.parallel);
    assert_eq!(tools.functions[0].name, "get_weather");
    assert_eq!(tools.functions[0].description.as_deref(), Some("d"));
    assert!(tools.functions[1].parameters.contains("object"));
    assert!(v.request.needs().tools);
    let v = with_tools(r#","tool_choice":"required","parallel_tool_calls":false"#).unwrap();
    let tools = v.request.params.tools.unwrap();
    assert_eq!(
        (tools.choice, tools.parallel),
        (ToolChoice::Required, false)
    );
    let v = with_tools(r#","tool_choice":{"type":"function","function":{"name":"now"}}"#).unwrap();
    assert_eq!(
        v.request.params.tools.unwrap().choice,
        ToolChoice::Function("now".into())
    );
    // "none": the model is not told about them.
    let v = with_tools(r#","tool_choice":"none""#).unwrap();
    assert!(v.request.params.tools.is_none() && !v.request.needs().tools);
}

#[test]
fn a_tool_chat_s_history_is_kept() {
    let v = chat(br#"{"model":"m","messages":[{"role":"user","content":"weather?"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
        {"role":"tool","tool_call_id":"call_1","content":"18 C"}]}"#).unwrap();
    let Input::Chat(m) = v.request.input else {
        panic!()
    };
    assert_eq!(m[1].tool_calls[0].name, "get_weather");
    assert_eq!(m[1].tool_calls[0].arguments, r#"{"city": "Paris"}"#);
    assert_eq!(m[1].content, "");
    assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
}

#[test]
fn bad_tools_name_the_field() {
    let param = |extra: &str| with_tools(extra).unwrap_err().param.unwrap_or_default();
    assert_eq!(param(r#","tool_choice":"sometimes""#), "tool_choice");
    assert_eq!(
        param(r#","tool_choice":{"type":"function","function":{"name":"later"}}"#),
        "tool_choice.function.name"
    );
    // A response format beside tools is served (calls or the format).
    let both = with_tools(r#","response_format":{"type":"json_object"}"#).unwrap();
    assert!(both.request.params.tools.is_some() && both.request.params.format.is_some());
    let body = |tools: &str, messages: &str| {
        chat(format!(r#"{{"model":"m","messages":{messages},"tools":{tools}}}"#).as_bytes())
            .unwrap_err()
            .param
            .unwrap_or_default()
    };
    let user = r#"[{"role":"user","content":"x"}]"#;
    assert_eq!(body(r#"{"a":1}"#, user), "tools");
    assert_eq!(body(r#"[{"type":"retrieval"}]"#, user), "tools[0].type");
    assert_eq!(body(r#"[{"type":"function"}]"#, user), "tools[0].function");
    assert_eq!(
        body(r#"[{"type":"function","function":{"name":"a b"}}]"#, user),
        "tools[0].function.name"
    );
    assert_eq!(
        body(
            r#"[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]"#,
            user
        ),
        "tools[1].function.name"
    );
    assert_eq!(
        body(
            r#"[{"type":"function","function":{"name":"f","parameters":"{}"}}]"#,
            user
        ),
        "tools[0].function.parameters"
    );
    assert_eq!(
        body(
            r#"[{"type":"function","function":{"name":"f","paramters":{}}}]"#,
            user
        ),
        "tools[0].function.paramters"
    );
    assert_eq!(
        body("[]", r#"[{"role":"tool","content":"42"}]"#),
        "messages[0].tool_call_id"
    );
    assert_eq!(
        body(
            "[]",
            r#"[{"role":"user","content":"x","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}]"#
        ),
        "messages[0].tool_calls"
    );
    assert_eq!(
        body(
            "[]",
            r#"[{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f"}}]}]"#
        ),
        "messages[0].tool_calls[0].function.arguments"
    );
}

#[test]
fn logprobs_ask_for_alternatives_on_chats_only() {
    let v = chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":20}"#).unwrap();
    assert_eq!(v.request.params.logprobs, Some(20));
    assert!(v.request.needs().logprobs);
    let v = chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#)
        .unwrap();
    assert_eq!(v.request.params.logprobs, Some(0));
    let e = completion(br#"{"model":"m","prompt":"x","logprobs":2}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("logprobs"));
    assert!(completion(br#"{"model":"m","prompt":"x","logprobs":0}"#).is_ok());
}
