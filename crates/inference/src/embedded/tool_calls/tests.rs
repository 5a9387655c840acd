use cocoon_protocol::{Function, ToolCallChunk};
use rand::{Rng, SeedableRng};

use super::*;

const FORMATS: [ToolFormat; 4] = [
    ToolFormat::Hermes,
    ToolFormat::Llama3,
    ToolFormat::Mistral,
    ToolFormat::Generic,
];

fn weather_tools(choice: ToolChoice, parallel: bool) -> Tools {
    Tools {
        functions: vec![
            Function {
                name: "get_weather".into(),
                description: Some("Weather now in a city".into()),
                parameters: r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#.into(),
            },
            Function {
                name: "get_time".into(),
                description: None,
                parameters: "{}".into(),
            },
        ],
        choice,
        parallel,
    }
}

fn call(name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: "x".into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

/// Arguments that a reader counting braces or looking for a closing tag
/// would get wrong: braces, brackets, tags and escaped quotes in strings,
/// nesting, non-ASCII text.
const TRICKY: &str = r#"{"city": "Zürich \"old town\" {not} [a] </tool_call>]}", "q": "\" }]} {[", "tags": [{"x": "\\"}, [1, {"y": null}]], "n": -1.5e3}"#;

/// The calls read back from `pieces`: (name, arguments) per index, each
/// head first and with an id of `format`'s kind.
fn assemble(format: ToolFormat, pieces: &[ToolCallChunk]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for p in pieces {
        let i = p.index as usize;
        if let Some(name) = &p.name {
            assert_eq!(i, calls.len(), "a call's head comes first, in order");
            let id = p.id.as_deref().expect("a head has an id");
            if format == ToolFormat::Mistral {
                assert!(
                    id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{id}"
                );
            } else {
                assert!(id.starts_with("call_") && id.len() == 29, "{id}");
            }
            calls.push((name.clone(), String::new()));
        } else {
            assert!(p.id.is_none());
        }
        calls[i].1.push_str(&p.arguments);
    }
    calls
}

/// Feed `text` to a fresh reader cut at `cuts` (character offsets).
fn read_in_parts(format: ToolFormat, text: &str, cuts: &[usize]) -> Vec<ToolCallChunk> {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = format.reader();
    let mut pieces = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([chars.len()].iter()) {
        let part: String = chars[from..cut].iter().collect();
        pieces.extend(reader.push(&part));
        from = cut;
    }
    pieces
}

#[test]
fn every_format_is_read_back_however_the_text_is_split() {
    let calls = [call("get_weather", TRICKY), call("get_time", "{}")];
    let expected: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    for format in FORMATS {
        let text = format.written(&calls);
        let n = text.chars().count();
        // Whole, one character at a time, and at random cuts.
        let mut splits: Vec<Vec<usize>> = vec![vec![], (1..n).collect()];
        for _ in 0..300 {
            let mut cuts: Vec<usize> = (0..rng.gen_range(1..12))
                .map(|_| rng.gen_range(0..=n))
                .collect();
            cuts.sort_unstable();
            splits.push(cuts);
        }
        for cuts in &splits {
            let pieces = read_in_parts(format, &text, cuts);
            assert_eq!(
                assemble(format, &pieces),
                expected,
                "{format:?} cut at {cuts:?}: {text}"
            );
        }
        // One character at a time, the arguments stream as they come.
        let pieces = read_in_parts(format, &text, &(1..n).collect::<Vec<_>>());
        assert!(
            pieces.iter().filter(|p| p.index == 0).count() > 20,
            "{format:?}"
        );
    }
}

#[test]
fn generic_single_calls_and_mistral_without_its_tag_are_read() {
    let one = [call("get_time", r#"{"zone": "}{"}"#)];
    let text = ToolFormat::Generic.written(&one);
    assert_eq!(
        text,
        r#"{"tool_call": {"name": "get_time", "arguments": {"zone": "}{"}}}"#
    );
    let pieces = read_in_parts(ToolFormat::Generic, &text, &[]);
    assert_eq!(
        assemble(ToolFormat::Generic, &pieces),
        vec![("get_time".into(), r#"{"zone": "}{"}"#.into())]
    );
    // Mistral's tag is a control token (no text) in its own vocabulary,
    // and v0.3 writes a space after it.
    for text in [
        r#"[{"name": "get_time", "arguments": {}}]"#,
        r#"[TOOL_CALLS] [{"name": "get_time", "arguments": {}}]"#,
        r#" [{"name": "get_time", "arguments": {}}]"#,
    ] {
        let pieces = read_in_parts(
            ToolFormat::Mistral,
            text,
            &(1..text.len()).collect::<Vec<_>>(),
        );
        assert_eq!(
            assemble(ToolFormat::Mistral, &pieces),
            vec![("get_time".into(), "{}".into())],
            "{text}"
        );
    }
}

#[test]
fn names_are_json_strings_and_may_follow_the_arguments() {
    // Arguments before the name are held until the name is known; the
    // name's escapes are decoded; the arguments' text is kept as written.
    let text = "{\"arguments\": {\"a\" :\n [1,2]}, \"name\": \"say_\\\"hi\\\"\"}";
    for cuts in [vec![], (1..text.len()).collect()] {
        let pieces = read_in_parts(ToolFormat::Llama3, text, &cuts);
        assert_eq!(
            assemble(ToolFormat::Llama3, &pieces),
            vec![("say_\"hi\"".into(), "{\"a\" :\n [1,2]}".into())]
        );
    }
    // Llama 3's key, and text around the calls, ignored.
    let text = "noise {\"name\": \"f\", \"parameters\": {\"k\": \"v\"}} more";
    let pieces = read_in_parts(ToolFormat::Llama3, text, &[]);
    assert_eq!(
        assemble(ToolFormat::Llama3, &pieces),
        vec![("f".into(), "{\"k\": \"v\"}".into())]
    );
}

#[test]
fn an_unfinished_call_sends_its_head_and_what_was_generated() {
    let mut reader = ToolFormat::Hermes.reader();
    let pieces = reader.push("<tool_call>\n{\"name\": \"get_wea");
    assert!(pieces.is_empty(), "no head before the name is complete");
    let pieces = reader.push("ther\", \"arguments\": {\"city\": \"Pa");
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    assert_eq!(pieces[0].name.as_deref(), Some("get_weather"));
    assert_eq!(pieces[1].arguments, "{\"city\": \"Pa");
    assert_eq!(reader.calls(), 1);
}

#[test]
fn calls_are_written_in_each_format() {
    let calls = [call("get_time", "{}"), call("get_weather", "not json")];
    assert_eq!(
        ToolFormat::Hermes.written(&calls[..1]),
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
    );
    assert_eq!(
        ToolFormat::Llama3.written(&calls[..1]),
        "{\"name\": \"get_time\", \"parameters\": {}}"
    );
    assert_eq!(
        ToolFormat::Mistral.written(&calls),
        "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": \"not json\"}]"
    );
    assert_eq!(
        ToolFormat::Generic.written(&calls),
        "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": \"not json\"}]}"
    );
}

/// Fragments of real templates, as published with the models.
const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}"#;
const LLAMA31: &str = r#"{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|python_tag|>' + tool_call.name + '.call(' }}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}"#;
const LLAMA32: &str = r#"{%- if tools_in_user_message and not tools is none %}
    {{- "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" }}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}"#;
const MISTRAL03: &str = r#"{%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}"#;
/// DeepSeek R1 renders tools in its own format, not one read here.
const DEEPSEEK_R1: &str = r#"{%- for tool in message['tool_calls'] %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endfor %}{%- if tools %}{%- endif %}"#;
const SMOLLM2: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";

#[test]
fn formats_are_told_from_real_templates() {
    assert_eq!(ToolFormat::detect(QWEN25), ToolFormat::Hermes);
    assert_eq!(ToolFormat::detect(LLAMA31), ToolFormat::Llama3);
    assert_eq!(ToolFormat::detect(LLAMA32), ToolFormat::Llama3);
    assert_eq!(ToolFormat::detect(MISTRAL03), ToolFormat::Mistral);
    assert_eq!(ToolFormat::detect(DEEPSEEK_R1), ToolFormat::Generic);
    assert_eq!(ToolFormat::detect(SMOLLM2), ToolFormat::Generic);
    assert_eq!(
        ToolFormat::detect(crate::tiny_model::TINY_CHAT_TEMPLATE),
        ToolFormat::Generic
    );
    for format in FORMATS {
        assert_eq!(format.rendered_by_template(), format != ToolFormat::Generic);
    }
}

#[test]
fn auto_answers_start_calling_at_each_formats_opening() {
    use Opening::*;
    let cases: &[(ToolFormat, &str, Opening)] = &[
        (ToolFormat::Hermes, "", Undecided),
        (ToolFormat::Hermes, "<tool_", Undecided),
        (ToolFormat::Hermes, "<tool_call>\n{", Call),
        (ToolFormat::Hermes, "<b>", Text),
        (ToolFormat::Hermes, "{\"name\"", Text),
        (ToolFormat::Llama3, "{\"na", Undecided),
        (ToolFormat::Llama3, "{\"name\": \"f", Call),
        (ToolFormat::Llama3, "{\"city\"", Text),
        (ToolFormat::Llama3, "Sure", Text),
        (ToolFormat::Mistral, "[TOOL", Undecided),
        (ToolFormat::Mistral, "[TOOL_CALLS]", Call),
        (ToolFormat::Mistral, "[{\"name\": ", Call),
        (ToolFormat::Mistral, "[1, 2]", Text),
        (ToolFormat::Generic, "{\"tool_", Undecided),
        (ToolFormat::Generic, "{\"tool_calls\": [", Call),
        (ToolFormat::Generic, "{\"tool_call\": {", Call),
        (ToolFormat::Generic, "{\"answer\"", Text),
        (ToolFormat::Generic, "<tool_call>", Text),
    ];
    for (format, text, expected) in cases {
        assert_eq!(format.opening(text), *expected, "{format:?} {text:?}");
    }
}

#[test]
fn the_grammar_names_only_the_chosen_functions_in_each_format() {
    for format in FORMATS {
        let named = format.grammar(
            &weather_tools(ToolChoice::Function("get_time".into()), true),
            None,
        );
        assert!(
            named.contains("get_time") && !named.contains("get_weather"),
            "{named}"
        );
        assert!(named.starts_with("start: "), "{named}");
        let any = format.grammar(&weather_tools(ToolChoice::Required, false), None);
        assert!(
            any.contains("get_time") && any.contains("get_weather"),
            "{any}"
        );
    }
    let key = |format: ToolFormat| {
        let g = format.grammar(&weather_tools(ToolChoice::Required, false), None);
        (g.contains("\"arguments\":"), g.contains("\"parameters\":"))
    };
    assert_eq!(key(ToolFormat::Llama3), (false, true));
    assert_eq!(key(ToolFormat::Mistral), (true, false));
    // Parallel calls where the format has them.
    let parallel = |format: ToolFormat, on: bool| {
        format.grammar(&weather_tools(ToolChoice::Required, on), None)
    };
    assert!(parallel(ToolFormat::Hermes, true).starts_with("start: call (\"\\n\" call)*"));
    assert!(parallel(ToolFormat::Hermes, false).starts_with("start: call\n"));
    assert!(parallel(ToolFormat::Mistral, true).contains("call (\", \" call)* \"]\""));
    assert!(!parallel(ToolFormat::Mistral, false).contains("call)*"));
    assert!(parallel(ToolFormat::Generic, true).contains("tool_calls"));
    assert!(!parallel(ToolFormat::Generic, false).contains("tool_calls"));
    assert_eq!(
        parallel(ToolFormat::Llama3, true),
        parallel(ToolFormat::Llama3, false),
        "one call per Llama 3 answer"
    );
    // Mistral's tag as its control token, where the vocabulary has it.
    let tools = weather_tools(ToolChoice::Required, false);
    assert!(ToolFormat::Mistral
        .grammar(&tools, Some(7))
        .contains(" | <[7]> \" \"? \"[\" call \"]\""));
    assert!(!ToolFormat::Mistral.grammar(&tools, None).contains("<["));
    assert_eq!(ToolFormat::Mistral.tag(), Some("[TOOL_CALLS]"));
    for format in [ToolFormat::Hermes, ToolFormat::Llama3, ToolFormat::Generic] {
        assert_eq!(format.tag(), None);
        assert_eq!(
            format.grammar(&tools, Some(7)),
            format.grammar(&tools, None)
        );
    }
}

#[test]
fn instructions_list_every_function_and_the_generic_layout() {
    let text = instructions(&weather_tools(ToolChoice::Auto, true));
    assert!(text.contains(r#""name":"get_weather""#), "{text}");
    assert!(
        text.contains(r#""description":"Weather now in a city""#),
        "{text}"
    );
    assert!(text.contains("{\"tool_call\": {\"name\""), "{text}");
    assert!(text.contains("{\"tool_calls\": ["), "{text}");
    let single = instructions(&weather_tools(ToolChoice::Auto, false));
    assert!(!single.contains("tool_calls"), "{single}");
    assert_eq!(
        tool_result(Some("call_1"), "-3 C"),
        r#"{"tool_response":{"content":"-3 C","tool_call_id":"call_1"}}"#
    );
}
