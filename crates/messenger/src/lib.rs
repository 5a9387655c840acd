//! The first customer's features, built on any client node's
//! OpenAI-compatible API: a Telegram Desktop chat export (`result.json`)
//! parsed with every error naming its field, summarised hierarchically to
//! fit the model's context, and reply drafts in the user's voice. Used by
//! `cocoon summarize` and by `examples/summary-bot`; it knows nothing of
//! proxies or workers, only the API.
//!
//! # Layout
//! * `chat_export` - Telegram Desktop's chat export, parsed.
//! * `summarize`   - [`summarize::Summarizer`]: summaries and reply drafts of
//!   an exported chat, asked of the network (chunked to fit the context).

#![forbid(unsafe_code)]

pub mod chat_export;
pub mod summarize;
