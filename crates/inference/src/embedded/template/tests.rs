use super::*;

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
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
