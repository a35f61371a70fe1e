//! JID rules the host relies on (contract §11.1, §11.4), on plain strings so they hold for stored JIDs too.

use whatsapp_rust::{Jid, Server};

/// Suffix of group chats.
pub const GROUP_SUFFIX: &str = "@g.us";
/// Suffix of individual (phone-number) chats.
pub const USER_SUFFIX: &str = "@s.whatsapp.net";
/// Suffix of linked-identity JIDs.
pub const LID_SUFFIX: &str = "@lid";
/// The status feed; its messages are ignored entirely.
pub const STATUS_BROADCAST: &str = "status@broadcast";

/// Whether the WhatsApp channel is responsible for a chat (contract §11.1): groups and individual chats.
///
/// An `@lid` chat that could not be translated (§11.4) is not owned, as in the original: replies to it
/// stay in the database.
pub fn owns_jid(jid: &str) -> bool {
    jid.ends_with(GROUP_SUFFIX) || jid.ends_with(USER_SUFFIX)
}

/// The user part of a linked-identity JID: the text before `@` and before any `:device`; `None` if
/// `jid` is not an `@lid` JID or has an empty user.
pub fn lid_user(jid: &str) -> Option<&str> {
    let local = jid.strip_suffix(LID_SUFFIX)?;
    let user = local.split(':').next().unwrap_or_default();
    (!user.is_empty()).then_some(user)
}

/// The chat JID of a phone number: `<phone>@s.whatsapp.net`, without a device suffix.
pub fn phone_chat(phone_user: &str) -> String {
    let user = phone_user.split(':').next().unwrap_or_default();
    format!("{user}{USER_SUFFIX}")
}

/// A JID as the host stores it: `user@server`, without the device or agent suffix.
pub fn to_host_jid(jid: &Jid) -> String {
    if jid.user.is_empty() {
        return jid.server.as_str().to_string();
    }
    format!("{}@{}", jid.user, jid.server.as_str())
}

/// Parses a chat JID the host asks us to send to. Only owned chat forms are accepted, so a stray
/// `local:` or status JID never reaches the network.
pub fn parse_chat(jid: &str) -> Option<Jid> {
    if !owns_jid(jid) {
        return None;
    }
    let parsed: Jid = jid.parse().ok()?;
    (!parsed.user.is_empty() && matches!(parsed.server, Server::Group | Server::Pn))
        .then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_follows_the_contract_suffixes() {
        for owned in [
            "120363000000000001@g.us",
            "15551234567-1600000000@g.us",
            "15551234567@s.whatsapp.net",
        ] {
            assert!(owns_jid(owned), "{owned}");
        }
        for foreign in [
            "local:main",
            "status@broadcast",
            "12345678901234@lid",
            "15551234567@c.us",
            "123@newsletter",
            "",
            "g.us",
        ] {
            assert!(!owns_jid(foreign), "{foreign}");
        }
    }

    #[test]
    fn lid_user_strips_device_and_rejects_other_servers() {
        assert_eq!(lid_user("12345678901234:7@lid"), Some("12345678901234"));
        assert_eq!(lid_user("12345678901234@lid"), Some("12345678901234"));
        assert_eq!(lid_user("@lid"), None);
        assert_eq!(lid_user(":3@lid"), None);
        assert_eq!(lid_user("15551234567@s.whatsapp.net"), None);
    }

    #[test]
    fn phone_chat_has_no_device() {
        assert_eq!(phone_chat("15551234567"), "15551234567@s.whatsapp.net");
        assert_eq!(phone_chat("15551234567:12"), "15551234567@s.whatsapp.net");
    }

    #[test]
    fn host_jid_drops_device_suffix() {
        let device: Jid = "15551234567:5@s.whatsapp.net".parse().unwrap();
        assert_eq!(to_host_jid(&device), "15551234567@s.whatsapp.net");
        let lid: Jid = "12345678901234:3@lid".parse().unwrap();
        assert_eq!(to_host_jid(&lid), "12345678901234@lid");
        let group: Jid = "120363000000000001@g.us".parse().unwrap();
        assert_eq!(to_host_jid(&group), "120363000000000001@g.us");
        assert_eq!(to_host_jid(&Jid::status_broadcast()), STATUS_BROADCAST);
    }

    #[test]
    fn parse_chat_accepts_only_owned_chats() {
        let group = parse_chat("120363000000000001@g.us").unwrap();
        assert_eq!(group.server, Server::Group);
        let user = parse_chat("15551234567@s.whatsapp.net").unwrap();
        assert_eq!(user.server, Server::Pn);
        assert_eq!(user.user.as_str(), "15551234567");
        assert!(parse_chat("local:main").is_none());
        assert!(parse_chat("status@broadcast").is_none());
        assert!(parse_chat("12345@lid").is_none());
        assert!(parse_chat("@s.whatsapp.net").is_none());
    }
}
