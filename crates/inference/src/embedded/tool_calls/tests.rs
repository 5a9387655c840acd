use cocoon_protocol::Function;

use super::*;

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

/// The calls read back from `pieces`: (name, arguments) per index.
fn assemble(pieces: &[ToolCallChunk]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for p in pieces {
        let i = p.index as usize;
        if let Some(name) = &p.name {
            assert_eq!(i, calls.len(), "a call's head comes first, in order");
            assert!(p.id.as_ref().is_some_and(|id| id.starts_with("call_")));
            calls.push((name.clone(), String::new()));
        }
        calls[i].1.push_str(&p.arguments);
    }
    calls
}

#[test]
fn calls_are_read_back_however_the_text_is_split() {
    let text = [
        written(&ToolCall {
            id: "x".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Zürich \"old town\""}"#.into(),
        }),
        written(&ToolCall {
            id: "y".into(),
            name: "get_time".into(),
            arguments: "{}".into(),
        }),
    ]
    .join("\n");
    let expected = vec![
        (
            "get_weather".to_string(),
            r#"{"city": "Zürich \"old town\""}"#.to_string(),
        ),
        ("get_time".to_string(), "{}".to_string()),
    ];
    // Whole, and in pieces of every size from one character.
    for size in [usize::MAX, 1, 2, 3, 5, 8, 13] {
        let mut reader = CallReader::default();
        let mut pieces = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for part in chars.chunks(size.min(chars.len())) {
            pieces.extend(reader.push(&part.iter().collect::<String>()));
        }
        assert_eq!(assemble(&pieces), expected, "pieces of {size}");
        assert_eq!(reader.calls(), 2);
        if size == 1 {
            // Arguments stream as they come, not all at the end.
            assert!(pieces.iter().filter(|p| p.index == 0).count() > 3);
        }
    }
}

#[test]
fn the_grammar_names_only_the_chosen_functions() {
    let named = grammar(&weather_tools(
        ToolChoice::Function("get_time".into()),
        false,
    ));
    assert!(
        named.contains("get_time") && !named.contains("get_weather"),
        "{named}"
    );
    assert!(named.starts_with("start: call\n"), "{named}");
    let any = grammar(&weather_tools(ToolChoice::Required, true));
    assert!(
        any.contains("get_time") && any.contains("get_weather"),
        "{any}"
    );
    assert!(any.starts_with("start: call (\"\\n\" call)*"), "{any}");
}

#[test]
fn instructions_list_every_function() {
    let text = instructions(&weather_tools(ToolChoice::Auto, true));
    assert!(text.contains(r#""name":"get_weather""#), "{text}");
    assert!(
        text.contains(r#""description":"Weather now in a city""#),
        "{text}"
    );
    assert!(text.contains("<tool_call>"), "{text}");
}
