use super::*;

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

fn offering(tools: cocoon_protocol::Tools) -> SamplingParams {
    SamplingParams {
        tools: Some(tools),
        ..SamplingParams::default()
    }
}

/// SmolLM2-135M-Instruct's template, as stored in its GGUF file.
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn renders_smollm2_template_with_default_system_prompt() {
    let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
    let out = t.render(&[msg("user", "Hi")]).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let out = t
        .render(&[msg("system", "Be brief."), msg("user", "Hi")])
        .unwrap();
    assert!(out.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
}

#[test]
fn python_string_methods_and_bos_token_work() {
    // In the style of Llama 3 / Qwen templates: bos_token, .strip(), trim_blocks.
    let source = "{{ bos_token }}{% for m in messages %}\n[{{ m.role | upper }}] {{ m.content.strip() }}\n{% endfor %}";
    let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
    assert_eq!(
        t.render(&[msg("user", "  padded  ")]).unwrap(),
        "<s>[USER] padded\n"
    );
}

#[test]
fn raise_exception_becomes_a_clear_error() {
    let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    let err = t.render(&[msg("assistant", "x")]).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("Conversation must start with user"), "{err}");
}

#[test]
fn broken_template_is_refused_at_load() {
    let err = ChatTemplate::new("{% for m in messages %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not compile"), "{err}");
}

#[test]
fn reads_tokenizer_config_json() {
    let json = r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
                   "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}"#;
    let t = ChatTemplate::from_tokenizer_config(json).unwrap();
    assert_eq!(t.render(&[msg("user", "x")]).unwrap(), "<s>x</s>");
}

fn weather() -> cocoon_protocol::Tools {
    cocoon_protocol::Tools {
        functions: vec![cocoon_protocol::Function {
            name: "get_weather".into(),
            description: None,
            parameters: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into(),
        }],
        choice: cocoon_protocol::ToolChoice::Auto,
        parallel: true,
    }
}

/// A user's question, the assistant's call, and the tool's result.
fn tool_chat() -> Vec<ChatMessage> {
    vec![
        msg("user", "Weather?"),
        ChatMessage {
            role: "assistant".into(),
            content: String::new(),
            tool_calls: vec![cocoon_protocol::ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city": "Oslo"}"#.into(),
            }],
            ..ChatMessage::default()
        },
        ChatMessage {
            tool_call_id: Some("call_1".into()),
            ..msg("tool", "-3 C")
        },
    ]
}

#[test]
fn templates_that_know_tools_get_them_and_the_calls_as_objects() {
    // In the style of Qwen 2.5: tools listed, calls read as objects.
    let source = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}({{ c.function.arguments.city }}){{ c.id }}</tool_call>{% endfor %}{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    let out = t.render_for(&tool_chat(), &offering(weather())).unwrap();
    assert_eq!(
        out,
        // (trim_blocks eats the newline after each block tag, as in transformers)
        "TOOLS:get_weather;[user]Weather?[assistant]<tool_call>get_weather(Oslo)call_1</tool_call>[tool]-3 C#call_1"
    );
}

#[test]
fn templates_without_tools_get_a_description_and_the_calls_as_text() {
    let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
    let out = t.render_for(&tool_chat(), &offering(weather())).unwrap();
    // The tools' description is the system message (the default one is not added).
    assert!(out.starts_with("<|im_start|>system\n# Tools\n"), "{out}");
    assert!(out.contains(r#""name":"get_weather""#), "{out}");
    assert!(
        out.contains("{\"tool_calls\": [{\"name\": <function-name>"),
        "{out}"
    );
    // Calls and results in the generic format, as text.
    assert!(out.contains("<|im_start|>assistant\n{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}}<|im_end|>"), "{out}");
    assert!(
        out.contains("<|im_start|>user\n{\"tool_response\":{\"content\":\"-3 C\",\"tool_call_id\":\"call_1\"}}<|im_end|>"),
        "{out}"
    );
    // Without tools, exactly the plain rendering.
    assert_eq!(
        t.render_for(&[msg("user", "Hi")], &SamplingParams::default())
            .unwrap(),
        t.render(&[msg("user", "Hi")]).unwrap()
    );
}

#[test]
fn reasoning_templates_get_what_was_asked_and_their_default_otherwise() {
    let t = ChatTemplate::new(crate::tiny_model::REASONING_CHAT_TEMPLATE, "<s>", "</s>").unwrap();
    let ask = |enabled: Option<bool>, effort: Option<&str>| SamplingParams {
        thinking: Some(cocoon_protocol::Thinking {
            enabled,
            effort: effort.map(str::to_string),
        }),
        ..SamplingParams::default()
    };
    let hi = [msg("user", "Hi")];
    // By default the answer opens a reasoning section.
    let default = t.render(&hi).unwrap();
    assert!(
        default.ends_with("<|im_start|>assistant\n<think>\n"),
        "{default:?}"
    );
    assert_eq!(t.render_for(&hi, &ask(Some(true), None)).unwrap(), default);
    // Thinking off: an empty, closed section.
    let off = t.render_for(&hi, &ask(Some(false), None)).unwrap();
    assert!(off.ends_with("<think>\n\n</think>\n\n"), "{off:?}");
    // The effort reaches the template (this one writes it into the system turn).
    let low = t.render_for(&hi, &ask(None, Some("low"))).unwrap();
    assert!(
        low.starts_with("<|im_start|>system\nReasoning: low"),
        "{low:?}"
    );
    // An earlier turn's reasoning is shown to templates that read it.
    let mut earlier = msg("assistant", "Hello!");
    earlier.reasoning_content = Some("greet back".into());
    let out = t
        .render(&[msg("user", "Hi"), earlier, msg("user", "Again")])
        .unwrap();
    assert!(
        out.contains("<think>\ngreet back\n</think>\n\nHello!"),
        "{out:?}"
    );
}

#[test]
fn tojson_writes_as_transformers_does() {
    // (A Hermes template: given the tools.)
    let source = "{# <tool_call> #}{{ tools | tojson }}|{{ tools[0].function.parameters | tojson(indent=2) }}|{{ 'Zürich \"x\"' | tojson }}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    let out = t
        .render_for(&[msg("user", "x")], &offering(weather()))
        .unwrap();
    assert_eq!(
        out,
        "[{\"function\": {\"name\": \"get_weather\", \"parameters\": {\"properties\": {\"city\": {\"type\": \"string\"}}, \"type\": \"object\"}}, \"type\": \"function\"}]|{\n  \"properties\": {\n    \"city\": {\n      \"type\": \"string\"\n    }\n  },\n  \"type\": \"object\"\n}|\"Zürich \\\"x\\\"\""
    );
}
