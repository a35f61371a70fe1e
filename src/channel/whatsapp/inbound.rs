//! Inbound message mapping (contract §3.2–3.4): a library message plus its envelope becomes a host
//! [`Message`]. Pure: the LID translation of the chat (§11.4) happens before, in the adapter.

use whatsapp_rust::prelude::{MessageExt, MessageInfo, wa};
use whatsapp_rust::wacore_binary::jid::JidExt;

use crate::channel::whatsapp::jid::{STATUS_BROADCAST, to_host_jid};
use crate::core::format::{extract_content, sender_display_name};
use crate::core::time::{iso_from_epoch_ms, now_iso};
use crate::core::types::Message;

/// Whether an event is dropped before any processing: the status feed, or no chat at all (§3.2).
pub fn is_ignored(info: &MessageInfo) -> bool {
    let chat = &info.source.chat;
    chat.is_status_broadcast() || chat.user.is_empty() || to_host_jid(chat) == STATUS_BROADCAST
}

/// Message text (§3.3): conversation, extended text, image caption, video caption; `''` otherwise.
///
/// Wrappers (ephemeral, view-once, device-sent, edited) are peeled first: in a chat with disappearing
/// messages every text arrives wrapped, and would otherwise be stored empty.
pub fn content(message: &wa::Message) -> String {
    let base = message.get_base_message();
    extract_content(&[
        base.conversation.as_deref(),
        base.extended_text_message
            .as_option()
            .and_then(|m| m.text.as_deref()),
        base.image_message
            .as_option()
            .and_then(|m| m.caption.as_deref()),
        base.video_message
            .as_option()
            .and_then(|m| m.caption.as_deref()),
    ])
}

/// Maps one inbound message (§3.4). `chat_jid` is the (possibly LID-translated) chat.
///
/// - `sender`: the participant in groups, the untranslated chat JID otherwise; device suffixes are
///   dropped so one person is one sender across their phones.
/// - `sender_name`: the push name, else the sender's user part.
/// - `timestamp`: the message's epoch seconds × 1000 in the store format.
pub fn map_inbound(message: &wa::Message, info: &MessageInfo, chat_jid: String) -> Message {
    let source = &info.source;
    let group = source.is_group || source.chat.is_group();
    let sender = if group && !source.sender.user.is_empty() {
        to_host_jid(&source.sender)
    } else {
        to_host_jid(&source.chat)
    };
    let push_name = (!info.push_name.is_empty()).then_some(info.push_name.as_str());
    let timestamp = info
        .timestamp
        .timestamp()
        .checked_mul(1000)
        .and_then(iso_from_epoch_ms)
        .unwrap_or_else(now_iso);
    Message {
        id: info.id.clone(),
        chat_jid,
        sender_name: sender_display_name(push_name, &sender),
        sender,
        content: content(message),
        timestamp,
        is_from_me: source.is_from_me,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::Jid;
    use whatsapp_rust::prelude::MessageField;
    use whatsapp_rust::wacore::chrono::{TimeZone, Utc};

    fn info(chat: &str, sender: &str, group: bool) -> MessageInfo {
        let mut info = MessageInfo::default();
        info.source.chat = chat.parse().unwrap();
        info.source.sender = sender.parse().unwrap();
        info.source.is_group = group;
        info.id = "3EB0ABCDEF".to_string();
        info.push_name = "Alice".to_string();
        info.timestamp = Utc.timestamp_opt(1_770_714_010, 0).unwrap();
        info
    }

    fn text(t: &str) -> wa::Message {
        wa::Message {
            conversation: Some(t.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn group_text_maps_every_field() {
        let i = info(
            "120363000000000001@g.us",
            "15550001111:3@s.whatsapp.net",
            true,
        );
        let m = map_inbound(&text("hello"), &i, "120363000000000001@g.us".into());
        assert_eq!(
            m,
            Message {
                id: "3EB0ABCDEF".into(),
                chat_jid: "120363000000000001@g.us".into(),
                sender: "15550001111@s.whatsapp.net".into(),
                sender_name: "Alice".into(),
                content: "hello".into(),
                timestamp: "2026-02-10T09:00:10.000Z".into(),
                is_from_me: false,
            }
        );
    }

    #[test]
    fn direct_message_sender_is_the_untranslated_chat() {
        let mut i = info("12345678901234@lid", "12345678901234:2@lid", false);
        i.push_name.clear();
        i.source.is_from_me = true;
        let m = map_inbound(&text("hi"), &i, "15550001111@s.whatsapp.net".into());
        assert_eq!(m.chat_jid, "15550001111@s.whatsapp.net");
        assert_eq!(m.sender, "12345678901234@lid");
        // No push name: the sender's user part.
        assert_eq!(m.sender_name, "12345678901234");
        assert!(m.is_from_me);
    }

    #[test]
    fn content_takes_the_first_non_empty_field_in_contract_order() {
        let mut msg = wa::Message {
            conversation: Some(String::new()),
            ..Default::default()
        };
        msg.image_message = MessageField::some(wa::message::ImageMessage {
            caption: Some("image caption".into()),
            ..Default::default()
        });
        msg.video_message = MessageField::some(wa::message::VideoMessage {
            caption: Some("video caption".into()),
            ..Default::default()
        });
        assert_eq!(content(&msg), "image caption");
        msg.extended_text_message = MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("extended".into()),
            ..Default::default()
        });
        assert_eq!(content(&msg), "extended");
        msg.conversation = Some("plain".into());
        assert_eq!(content(&msg), "plain");
        msg.conversation = None;
        msg.extended_text_message = MessageField::none();
        msg.image_message = MessageField::none();
        assert_eq!(content(&msg), "video caption");
    }

    #[test]
    fn messages_without_text_are_still_mapped_with_empty_content() {
        let sticker = wa::Message {
            sticker_message: MessageField::some(Default::default()),
            ..Default::default()
        };
        let i = info(
            "15550001111@s.whatsapp.net",
            "15550001111@s.whatsapp.net",
            false,
        );
        let m = map_inbound(&sticker, &i, "15550001111@s.whatsapp.net".into());
        assert_eq!(m.content, "");
        assert_eq!(m.id, "3EB0ABCDEF");
        assert_eq!(content(&wa::Message::default()), "");
    }

    #[test]
    fn wrapped_text_is_unwrapped() {
        let msg = wa::Message {
            ephemeral_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(text("disappearing")),
            }),
            ..Default::default()
        };
        assert_eq!(content(&msg), "disappearing");
    }

    #[test]
    fn status_and_chatless_events_are_ignored() {
        let mut i = MessageInfo::default();
        assert!(is_ignored(&i), "no chat JID");
        i.source.chat = Jid::status_broadcast();
        assert!(is_ignored(&i));
        i.source.chat = "status@broadcast".parse().unwrap();
        assert!(is_ignored(&i));
        i.source.chat = "15550001111@s.whatsapp.net".parse().unwrap();
        assert!(!is_ignored(&i));
        i.source.chat = "120363000000000001@g.us".parse().unwrap();
        assert!(!is_ignored(&i));
    }
}
