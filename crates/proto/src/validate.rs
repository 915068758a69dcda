//! Field rules for op bodies that hold on every node, whatever the guild state.

use crate::body::Body;
use crate::change_scan::{self, ScanError};
use crate::limits;
use crate::sealed::Text;

pub fn check_name(name: &str) -> Result<(), &'static str> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err("names must not be blank");
    }
    if chars > limits::MAX_NAME_CHARS {
        return Err("names are at most 100 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("names must not contain control characters");
    }
    Ok(())
}

pub fn check_content(content: &str) -> Result<(), &'static str> {
    if content.trim().is_empty() {
        return Err("message content must not be blank");
    }
    if content.chars().count() > limits::MAX_CONTENT_CHARS {
        return Err("message content is at most 4000 characters");
    }
    Ok(())
}

fn check_emoji(emoji: &str) -> Result<(), &'static str> {
    if emoji.is_empty()
        || emoji.len() > limits::MAX_EMOJI_BYTES
        || emoji.chars().any(char::is_whitespace)
    {
        return Err("an emoji is 1 to 64 bytes without whitespace");
    }
    Ok(())
}

/// Plain text by its field's rule; sealed text by its shape only, since only the nodes that
/// can open it can check what it says (they check the same rule when they open it).
fn check_text(text: &Text, rule: fn(&str) -> Result<(), &'static str>) -> Result<(), &'static str> {
    match text {
        Text::Plain(text) => rule(text),
        Text::Sealed(sealed) => sealed.check(),
    }
}

pub fn check_body(body: &Body) -> Result<(), &'static str> {
    match body {
        Body::Genesis { name }
        | Body::RoleCreate { name, .. }
        | Body::ChannelCreate { name, .. } => check_name(name),
        Body::ThreadCreate { name, .. } => check_text(name, check_name),
        Body::MetaChange { change } if change.is_empty() => Err("empty metadata change"),
        // Automerge expands every run of a change, so the op count is bounded before it parses.
        Body::MetaChange { change } => {
            change_scan::claimed_ops(change, limits::MAX_META_CHANGE_OPS)
                .map(drop)
                .map_err(ScanError::reason)
        }
        Body::MessageCreate { content, .. } | Body::MessageEdit { content, .. } => {
            check_text(content, check_content)
        }
        Body::ReactionAdd { emoji, .. } | Body::ReactionRemove { emoji, .. } => check_emoji(emoji),
        Body::Home { nodes } => crate::body::check_homes(nodes),
        _ => Ok(()),
    }
}
