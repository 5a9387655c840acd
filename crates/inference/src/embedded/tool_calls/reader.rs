//! Reading generated calls back as OpenAI's streamed `tool_calls` pieces,
//! whatever the format: the text is scanned as JSON (strings and their
//! escapes included), and a call is an object found where its format puts
//! calls (see [`Nest`]). Its `name` is sent with a fresh id as soon as the
//! name's string is complete; its `arguments` (or `parameters`) value is
//! sent as it is generated, byte for byte, ending where its nesting does.

use cocoon_protocol::ToolCallChunk;

/// Where a format's calls sit in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nest {
    /// Objects at the top level, text between them ignored (Hermes'
    /// `<tool_call>` tags, Llama 3's bare objects).
    Top,
    /// Objects inside a top-level array, after an optional literal
    /// (Mistral's `[TOOL_CALLS][...]`).
    Listed { after: &'static str },
    /// The object under a top-level object's `tool_call` key, or those of
    /// the array under its `tool_calls` key (the generic format).
    Keyed,
}

/// How a call's id is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ids {
    /// OpenAI's: `call_` and 24 hexadecimal digits.
    OpenAi,
    /// Nine letters and digits (Mistral's templates refuse any other).
    Nine,
}

impl Ids {
    /// A fresh id.
    pub fn fresh(self) -> String {
        match self {
            Ids::OpenAi => {
                let bytes: [u8; 12] = rand::random();
                format!("call_{}", hex::encode(bytes))
            }
            Ids::Nine => {
                use rand::Rng;
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                let mut rng = rand::thread_rng();
                (0..9)
                    .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                    .collect()
            }
        }
    }
}

/// One open JSON container.
#[derive(Debug)]
struct Frame {
    array: bool,
    /// In an object: the key whose value comes next (or came last).
    key: Option<String>,
    /// In an object: the next string is a key.
    expect_key: bool,
}

/// What a string being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Key,
    /// A call's `name` value.
    Name,
    /// Any other value.
    Other,
}

/// Where the arguments of the call being read stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arguments {
    /// Their key not yet seen.
    Waiting,
    /// After their key, before the value.
    Next,
    /// Inside a container value that ends when the stack is this deep again.
    Nested(usize),
    /// Inside a string value.
    Quoted,
    /// Inside a number, `true`, `false` or `null`.
    Bare,
    Done,
}

/// The call being read.
#[derive(Debug)]
struct Call {
    /// Stack depth inside the call's object.
    depth: usize,
    /// Its index, once its head (id and name) was sent.
    index: Option<u32>,
    arguments: Arguments,
    /// Argument text not yet sent.
    unsent: String,
}

/// Reads the text of an answer made of calls and gives OpenAI's streamed
/// pieces: a call's id and name as soon as its name is complete, then its
/// arguments as they are generated.
#[derive(Debug)]
pub struct CallReader {
    nest: Nest,
    ids: Ids,
    /// Text not yet read (only ever a possible start of `Nest::Listed`'s literal).
    pending: String,
    stack: Vec<Frame>,
    /// Inside a string: what it is, the raw text so far when it is kept
    /// (a key or a name), and whether the last character was a backslash.
    string: Option<(Text, String, bool)>,
    call: Option<Call>,
    calls: u32,
}

impl CallReader {
    pub(super) fn new(nest: Nest, ids: Ids) -> Self {
        Self {
            nest,
            ids,
            pending: String::new(),
            stack: Vec::new(),
            string: None,
            call: None,
            calls: 0,
        }
    }

    /// Take `text`; the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<ToolCallChunk> {
        let mut out = Vec::new();
        self.pending.push_str(text);
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_str();
        while let Some(c) = rest.chars().next() {
            if let (Nest::Listed { after }, true, None) =
                (self.nest, self.stack.is_empty(), &self.string)
            {
                if let Some(tail) = rest.strip_prefix(after) {
                    rest = tail;
                    continue;
                }
                if after.starts_with(rest) {
                    // Perhaps the literal, split: wait for more.
                    self.pending = rest.to_string();
                    break;
                }
            }
            self.read(c, &mut out);
            rest = &rest[c.len_utf8()..];
        }
        self.flush(&mut out);
        out
    }

    /// Calls begun so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Whether an object opening at the current depth is a call.
    fn at_call(&self) -> bool {
        let key = |f: &Frame, k: &str| !f.array && f.key.as_deref() == Some(k);
        match (self.nest, self.stack.as_slice()) {
            (Nest::Top, []) => true,
            (Nest::Listed { .. }, [f]) => f.array,
            (Nest::Keyed, [f]) => key(f, "tool_call"),
            (Nest::Keyed, [f, g]) => key(f, "tool_calls") && g.array,
            _ => false,
        }
    }

    fn read(&mut self, c: char, out: &mut Vec<ToolCallChunk>) {
        if self.stack.is_empty() && self.string.is_none() {
            let opens = c == '{' || (c == '[' && matches!(self.nest, Nest::Listed { .. }));
            if !opens {
                // Text between calls.
                return;
            }
        }
        // The arguments' text, character by character as it comes.
        if let Some(call) = &mut self.call {
            match call.arguments {
                Arguments::Next if !c.is_whitespace() && c != ':' => {
                    call.arguments = match c {
                        '{' | '[' => Arguments::Nested(self.stack.len() + 1),
                        '"' => Arguments::Quoted,
                        _ => Arguments::Bare,
                    };
                }
                Arguments::Bare if c == ',' || c == '}' || c == ']' || c.is_whitespace() => {
                    call.arguments = Arguments::Done;
                }
                _ => {}
            }
            if matches!(
                call.arguments,
                Arguments::Nested(_) | Arguments::Quoted | Arguments::Bare
            ) {
                call.unsent.push(c);
            }
        }
        if let Some((kind, raw, escaped)) = &mut self.string {
            if matches!(kind, Text::Key | Text::Name) {
                raw.push(c);
            }
            let ended = if *escaped {
                *escaped = false;
                false
            } else {
                *escaped = c == '\\';
                c == '"'
            };
            if ended {
                if let Some((kind, raw, _)) = self.string.take() {
                    self.string_ended(kind, &raw, out);
                }
            }
            return;
        }
        match c {
            '"' => {
                let kind = match self.stack.last() {
                    Some(f) if !f.array && f.expect_key => Text::Key,
                    Some(f) if self.in_call_object() && f.key.as_deref() == Some("name") => {
                        Text::Name
                    }
                    _ => Text::Other,
                };
                self.string = Some((kind, String::from('"'), false));
            }
            '{' | '[' => {
                if c == '{' && self.call.is_none() && self.at_call() {
                    self.call = Some(Call {
                        depth: self.stack.len() + 1,
                        index: None,
                        arguments: Arguments::Waiting,
                        unsent: String::new(),
                    });
                }
                self.stack.push(Frame {
                    array: c == '[',
                    key: None,
                    expect_key: c == '{',
                });
            }
            '}' | ']' => {
                let depth = self.stack.len();
                self.stack.pop();
                if let Some(call) = &mut self.call {
                    if call.arguments == Arguments::Nested(depth) {
                        call.arguments = Arguments::Done;
                    }
                    if call.depth == depth {
                        self.flush(out);
                        self.call = None;
                    }
                }
            }
            ',' => {
                if let Some(f) = self.stack.last_mut() {
                    f.expect_key = !f.array;
                }
            }
            _ => {}
        }
    }

    /// The innermost open container is the call's own object.
    fn in_call_object(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|call| call.depth == self.stack.len())
    }

    fn string_ended(&mut self, kind: Text, raw: &str, out: &mut Vec<ToolCallChunk>) {
        let in_call = self.in_call_object();
        match kind {
            Text::Key => {
                let key: Option<String> = serde_json::from_str(raw).ok();
                if in_call && matches!(key.as_deref(), Some("arguments" | "parameters")) {
                    if let Some(call) = &mut self.call {
                        if call.arguments == Arguments::Waiting {
                            call.arguments = Arguments::Next;
                        }
                    }
                }
                if let Some(f) = self.stack.last_mut() {
                    f.key = key;
                    f.expect_key = false;
                }
            }
            Text::Name => {
                let (Some(call), Ok(name)) = (&mut self.call, serde_json::from_str::<String>(raw))
                else {
                    return;
                };
                if call.index.is_some() {
                    return;
                }
                let index = self.calls;
                self.calls += 1;
                call.index = Some(index);
                out.push(ToolCallChunk {
                    index,
                    id: Some(self.ids.fresh()),
                    name: Some(name),
                    ..ToolCallChunk::default()
                });
            }
            Text::Other => {
                if let Some(call) = &mut self.call {
                    if call.arguments == Arguments::Quoted {
                        call.arguments = Arguments::Done;
                    }
                }
            }
        }
    }

    /// Send the current call's arguments read so far, once its head was sent.
    fn flush(&mut self, out: &mut Vec<ToolCallChunk>) {
        let Some(call) = &mut self.call else {
            return;
        };
        let Some(index) = call.index else {
            return;
        };
        if !call.unsent.is_empty() {
            out.push(ToolCallChunk {
                index,
                arguments: std::mem::take(&mut call.unsent),
                ..ToolCallChunk::default()
            });
        }
    }
}
