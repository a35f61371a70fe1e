//! Trigger policy (contract §1.4, §4.2–4.5, fix §12.1): which messages wake an agent.

use regex::{Regex, RegexBuilder};

use crate::core::types::{Message, RegisteredGroup};

/// A compiled trigger: `^@<name>` followed by an ASCII word boundary, case-insensitive, tested against
/// the trimmed message content.
#[derive(Debug, Clone)]
pub struct Trigger {
    regex: Regex,
    display: String,
}

impl Trigger {
    /// Builds the trigger for a bare name (`Andy`) or a stored trigger (`@Andy`, `@@Andy`, ` @Andy `).
    /// Leading `@`s are normalized to exactly one (contract §12.1). Returns `None` for an empty name.
    pub fn new(name_or_trigger: &str) -> Option<Self> {
        let name = name_or_trigger.trim().trim_start_matches('@');
        if name.is_empty() {
            return None;
        }
        // `(?-u:\b)`: JavaScript's `\b` treats only ASCII [A-Za-z0-9_] as word characters (contract §1.4).
        let pattern = format!("^@{}(?-u:\\b)", regex::escape(name));
        let regex = RegexBuilder::new(&pattern)
            .case_insensitive(true)
            .build()
            .ok()?;
        Some(Self {
            regex,
            display: format!("@{name}"),
        })
    }

    /// The trigger for a group: its stored `trigger`, or the global `@<assistant>` when that is empty.
    pub fn for_group(group: &RegisteredGroup, assistant_name: &str) -> Option<Self> {
        Self::new(&group.trigger).or_else(|| Self::new(assistant_name))
    }

    /// Whether `content` starts with the trigger, after trimming surrounding whitespace.
    pub fn matches(&self, content: &str) -> bool {
        self.regex.is_match(content.trim())
    }

    /// The normalized trigger text, e.g. `@Andy`.
    pub fn as_str(&self) -> &str {
        &self.display
    }
}

/// Whether a group's messages must contain a trigger before an agent runs (contract §4.2, §4.3):
/// never for main, and not when `requires_trigger` is explicitly false.
pub fn needs_trigger(group: &RegisteredGroup) -> bool {
    !group.is_main() && group.requires_trigger != Some(false)
}

/// Whether any message in `messages` triggers the group (contract §4.5). Groups that need no trigger
/// are always triggered when there is at least one message.
pub fn is_triggered(group: &RegisteredGroup, assistant_name: &str, messages: &[Message]) -> bool {
    if messages.is_empty() {
        return false;
    }
    if !needs_trigger(group) {
        return true;
    }
    match Trigger::for_group(group, assistant_name) {
        Some(trigger) => messages.iter().any(|m| trigger.matches(&m.content)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_word_boundary_semantics() {
        let t = Trigger::new("Andy").unwrap();
        for ok in ["@Andy", "@andy hi", "@ANDY,", "@Andy's", "  @Andy  "] {
            assert!(t.matches(ok), "{ok:?} should match");
        }
        for no in ["@Andrew", "@Andy_x", "hi @Andy", "@Andy1", "Andy"] {
            assert!(!t.matches(no), "{no:?} should not match");
        }
        // Non-ASCII letters are not word characters in JavaScript, so a boundary exists before them.
        assert!(t.matches("@Andyé"));
    }

    #[test]
    fn metacharacters_are_escaped() {
        let t = Trigger::new("A.b").unwrap();
        assert!(t.matches("@A.b go"));
        assert!(!t.matches("@Axb go"));
        // As in JavaScript, a name ending in a non-word character needs a word character after it.
        let plus = Trigger::new("C++").unwrap();
        assert!(!plus.matches("@C++ hi"));
        assert!(plus.matches("@C++hi"));
    }

    #[test]
    fn normalizes_leading_at() {
        assert_eq!(Trigger::new("@@Bot").unwrap().as_str(), "@Bot");
        assert_eq!(Trigger::new(" Bot ").unwrap().as_str(), "@Bot");
        assert!(Trigger::new("@").is_none());
        assert!(Trigger::new("").is_none());
    }
}
