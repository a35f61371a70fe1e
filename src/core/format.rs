//! Prompt and outbound formatting (contract §3.3–3.4, §3.7, §4.6–4.10, fixes §12.8, §12.14).

use std::sync::LazyLock;

use regex::Regex;

use crate::core::types::Message;

/// Escapes `&` first, then `<`, `>` and `"`. The apostrophe is deliberately left alone (contract §4.6).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// The agent prompt for a batch of messages (contract §4.6): `<messages>`, one `<message>` line each, `</messages>`.
pub fn format_messages(messages: &[Message]) -> String {
    let lines: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                "<message sender=\"{}\" time=\"{}\">{}</message>",
                escape_xml(&m.sender_name),
                m.timestamp,
                escape_xml(&m.content)
            )
        })
        .collect();
    format!("<messages>\n{}\n</messages>", lines.join("\n"))
}

static INTERNAL_BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    // Non-greedy, spans newlines, case-sensitive; an unclosed tag is left alone (contract §4.7, §4.8).
    Regex::new(r"(?s)<internal>.*?</internal>").expect("static regex")
});

/// Removes every `<internal>…</internal>` block and trims the rest.
pub fn strip_internal(text: &str) -> String {
    INTERNAL_BLOCK.replace_all(text, "").trim().to_string()
}

/// Outbound text for a chat (contract §4.9): internal blocks stripped, trimmed, prefixed with
/// `<assistant>: ` when the channel wants a prefix. `None` means "send nothing".
///
/// IPC `send_message` goes through this too; the original sent it verbatim (contract §4.10, fixed per §12.14).
pub fn format_outbound(raw: &str, assistant_name: &str, wants_prefix: bool) -> Option<String> {
    let text = strip_internal(raw);
    if text.is_empty() {
        None
    } else if wants_prefix {
        Some(format!("{assistant_name}: {text}"))
    } else {
        Some(text)
    }
}

/// Converts a frame's `result` value to text: strings as-is, anything else as compact JSON (contract §4.7).
pub fn result_text(result: &serde_json::Value) -> String {
    match result {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The prefix that marks the assistant's own echoed messages, e.g. `Andy:`.
pub fn bot_prefix(assistant_name: &str) -> String {
    format!("{assistant_name}:")
}

/// Whether a stored message is the assistant's own echo (contract §3.7, fixed per §12.8).
///
/// The original matched `LIKE 'Andy:%'`: case-insensitive, with `%`/`_` in the name acting as wildcards, so
/// a human writing `andy: …` was hidden from the agent. We require the exact, case-sensitive prefix **and**
/// the from-me flag: every echo of a host-sent message is from-me, while other people's messages never are.
/// Old bot rows (from-me, `Andy:` prefix) stay excluded. The store's SQL filter implements the same rule.
pub fn is_bot_message(message: &Message, assistant_name: &str) -> bool {
    message.is_from_me && message.content.starts_with(&bot_prefix(assistant_name))
}

/// Message content from the first non-empty text field (contract §3.3); `''` when there is none, and the
/// message is still stored.
pub fn extract_content(candidates: &[Option<&str>]) -> String {
    candidates
        .iter()
        .flatten()
        .find(|s| !s.is_empty())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Display name of a sender: the push name, else the part of the sender JID before `@` (contract §3.4).
pub fn sender_display_name(push_name: Option<&str>, sender_jid: &str) -> String {
    match push_name {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => sender_jid.split('@').next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_multiline_and_multiple_blocks() {
        assert_eq!(
            strip_internal("a <internal>x</internal> b <internal>y\nz</internal> c"),
            "a  b  c"
        );
        assert_eq!(strip_internal("<internal>open"), "<internal>open");
        assert_eq!(
            strip_internal("<Internal>x</Internal>"),
            "<Internal>x</Internal>"
        );
        // Nested: the first closing tag ends the block.
        assert_eq!(
            strip_internal("<internal>a<internal>b</internal>c</internal>d"),
            "c</internal>d"
        );
    }

    #[test]
    fn outbound_without_prefix() {
        assert_eq!(
            format_outbound(" hi ", "Andy", false).as_deref(),
            Some("hi")
        );
        assert_eq!(
            format_outbound("<internal>x</internal>", "Andy", true),
            None
        );
    }

    #[test]
    fn result_text_serializes_non_strings() {
        assert_eq!(result_text(&serde_json::json!("x")), "x");
        assert_eq!(result_text(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
