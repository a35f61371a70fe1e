//! Interactive pairing (`nanoclaw whatsapp pair`): the host itself never pairs (contract §11.2).
//!
//! Shows each rotating QR code in the terminal and writes it as a PNG, or requests an 8-character
//! code for "Link with phone number". Progress goes to a one-line status file with the original auth
//! tool's values: `already_authenticated`, `authenticated`, `pairing_code:<code>`, `failed:logged_out`,
//! `failed:qr_timeout`, `failed:<reason>`.

use std::io::Write;
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::bot::EventDelivery;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::prelude::{Event, EventKind};

use crate::channel::whatsapp::auth::{self, WaPaths, write_private};
use crate::channel::whatsapp::session::{SHUTDOWN_GRACE, open_builder, shutdown_bounded};
use crate::channel::whatsapp::{WhatsAppError, qr};

/// How long `pair` waits for the phone by default.
pub const DEFAULT_PAIR_TIMEOUT: Duration = Duration::from_secs(300);
/// Events buffered between the library and the pairing loop.
const PAIR_EVENTS: usize = 64;

/// What `pair` should do.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Phone number for pair-code linking; QR only when `None`.
    pub phone: Option<String>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Delete existing credentials first (after a logout the old ones are useless).
    pub reset: bool,
}

/// How pairing ended successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    /// Credentials were already valid; nothing was linked.
    AlreadyAuthenticated,
    /// A new device link was made.
    Authenticated,
}

/// The pairing-relevant part of a library event, owned so it can cross a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairEvent {
    Qr(String),
    Code(String),
    Linked,
    Connected,
    LoggedOut,
    QrExhausted,
    Failed(String),
}

/// Event kinds the pairing loop listens to.
pub const PAIR_EVENT_KINDS: [EventKind; 8] = [
    EventKind::PairingQrCode,
    EventKind::PairingCode,
    EventKind::PairSuccess,
    EventKind::PairError,
    EventKind::PairingCodeError,
    EventKind::PairingQrCodesExhausted,
    EventKind::Connected,
    EventKind::LoggedOut,
];

/// Reduces a library event to what pairing cares about.
pub fn pair_event(event: &Event) -> Option<PairEvent> {
    Some(match event {
        Event::PairingQrCode(q) => PairEvent::Qr(q.code.clone()),
        Event::PairingCode(c) => PairEvent::Code(c.code.clone()),
        Event::PairSuccess(_) => PairEvent::Linked,
        Event::Connected(_) => PairEvent::Connected,
        Event::LoggedOut(_) => PairEvent::LoggedOut,
        Event::PairingQrCodesExhausted(_) => PairEvent::QrExhausted,
        Event::PairError(e) => PairEvent::Failed(e.error.clone()),
        Event::PairingCodeError(e) => PairEvent::Failed(e.error.clone()),
        _ => return None,
    })
}

/// The pairing state machine: what to show and whether pairing is over.
#[derive(Debug, Default)]
pub struct PairProgress {
    /// A QR or code was shown, or a link reported: a later `Connected` means a fresh pairing.
    prompted: bool,
}

/// One step's effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairStep {
    ShowQr(String),
    ShowCode(String),
    Note(&'static str),
    Done(PairOutcome),
    Fail(String),
}

impl PairProgress {
    pub fn step(&mut self, event: PairEvent) -> PairStep {
        match event {
            PairEvent::Qr(code) => {
                self.prompted = true;
                PairStep::ShowQr(code)
            }
            PairEvent::Code(code) => {
                self.prompted = true;
                PairStep::ShowCode(code)
            }
            PairEvent::Linked => {
                self.prompted = true;
                PairStep::Note("linked; finishing the first connection")
            }
            PairEvent::Connected if self.prompted => PairStep::Done(PairOutcome::Authenticated),
            PairEvent::Connected => PairStep::Done(PairOutcome::AlreadyAuthenticated),
            PairEvent::LoggedOut => PairStep::Fail("logged_out".into()),
            PairEvent::QrExhausted => PairStep::Fail("qr_timeout".into()),
            PairEvent::Failed(reason) => PairStep::Fail(status_reason(&reason)),
        }
    }
}

/// A reason safe for the one-line status file.
fn status_reason(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if line.trim().is_empty() {
        "unknown".into()
    } else {
        line.trim().to_string()
    }
}

/// Normalises a phone number for pair-code linking: digits with country code, no `+`, spaces or
/// dashes; 7–15 digits (E.164).
pub fn normalize_phone(raw: &str) -> Result<String, WhatsAppError> {
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    if (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Ok(digits.to_string())
    } else {
        Err(WhatsAppError::InvalidPhone(raw.to_string()))
    }
}

fn write_status(paths: &WaPaths, status: &str) {
    if let Err(e) = write_private(&paths.status, format!("{status}\n").as_bytes()) {
        tracing::warn!(cause = %e, "cannot write the pairing status file");
    }
}

/// Links this host to a WhatsApp account. Progress and codes are written to `out`.
pub async fn pair(
    paths: &WaPaths,
    options: &PairOptions,
    out: &mut dyn Write,
) -> Result<PairOutcome, WhatsAppError> {
    let phone = options.phone.as_deref().map(normalize_phone).transpose()?;
    if options.reset {
        auth::reset(paths)?;
    }
    auth::prepare(paths)?;
    let (tx, mut rx) = mpsc::channel(PAIR_EVENTS);
    let mut builder = open_builder(&paths.auth_db)
        .await?
        .with_event_delivery(EventDelivery::Ordered {
            capacity: PAIR_EVENTS,
        })
        .on_event_for(&PAIR_EVENT_KINDS, move |event, _client| {
            let tx = tx.clone();
            let item = pair_event(&event);
            async move {
                if let Some(item) = item {
                    let _ = tx.send(item).await;
                }
            }
        });
    if let Some(phone) = phone {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: phone,
            ..Default::default()
        });
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| WhatsAppError::Library(e.to_string()))?;
    let handle = bot.spawn();

    let mut progress = PairProgress::default();
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    let result = loop {
        let event = tokio::select! {
            _ = &mut deadline => break Err(WhatsAppError::PairFailed("qr_timeout".into())),
            event = rx.recv() => match event {
                Some(event) => event,
                None => break Err(WhatsAppError::PairFailed("session ended".into())),
            },
        };
        match progress.step(event) {
            PairStep::ShowQr(code) => {
                let text = qr::render_terminal(&code)?;
                if let Err(e) = qr::write_png(&code, &paths.qr_png) {
                    tracing::warn!(cause = %e, "cannot write the QR image");
                }
                write_status(paths, "waiting_for_qr_scan");
                let _ = writeln!(
                    out,
                    "\nScan with WhatsApp > Settings > Linked devices > Link a device \
                     (also saved as {}):\n{text}",
                    paths.qr_png.display()
                );
            }
            PairStep::ShowCode(code) => {
                write_status(paths, &format!("pairing_code:{code}"));
                let _ = writeln!(
                    out,
                    "\nOn the phone: Linked devices > Link a device > Link with phone number \
                     instead, then enter: {code}"
                );
            }
            PairStep::Note(note) => {
                let _ = writeln!(out, "{note}");
            }
            PairStep::Done(outcome) => break Ok(outcome),
            PairStep::Fail(reason) if reason == "logged_out" => {
                break Err(WhatsAppError::LoggedOut);
            }
            PairStep::Fail(reason) => break Err(WhatsAppError::PairFailed(reason)),
        }
    };
    let _ = std::fs::remove_file(&paths.qr_png);
    match &result {
        Ok(PairOutcome::AlreadyAuthenticated) => write_status(paths, "already_authenticated"),
        Ok(PairOutcome::Authenticated) => write_status(paths, "authenticated"),
        Err(WhatsAppError::LoggedOut) => write_status(paths, "failed:logged_out"),
        Err(WhatsAppError::PairFailed(reason)) => write_status(paths, &format!("failed:{reason}")),
        Err(e) => write_status(paths, &format!("failed:{}", status_reason(&e.to_string()))),
    }
    // Graceful: the library flushes the new credentials to the store before stopping.
    shutdown_bounded(handle, SHUTDOWN_GRACE).await;
    auth::prepare(paths)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::wacore::types::events::ConnectFailureReason;
    use whatsapp_rust::wacore::types::events::{
        Connected, LoggedOut, PairingCode, PairingQrCode, PairingQrCodesExhausted,
    };

    fn qr_event(code: &str) -> Event {
        Event::PairingQrCode(
            PairingQrCode::builder()
                .code(code.to_string())
                .timeout(Duration::from_secs(20))
                .build(),
        )
    }

    #[test]
    fn library_events_reduce_to_pair_events() {
        assert_eq!(
            pair_event(&qr_event("2@x")),
            Some(PairEvent::Qr("2@x".into()))
        );
        let code = Event::PairingCode(
            PairingCode::builder()
                .code("ABCD1234".into())
                .timeout(Duration::from_secs(180))
                .build(),
        );
        assert_eq!(pair_event(&code), Some(PairEvent::Code("ABCD1234".into())));
        assert_eq!(
            pair_event(&Event::Connected(Connected::builder().build())),
            Some(PairEvent::Connected)
        );
        let logged_out = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(true)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        );
        assert_eq!(pair_event(&logged_out), Some(PairEvent::LoggedOut));
        let exhausted = Event::PairingQrCodesExhausted(
            PairingQrCodesExhausted::builder()
                .disconnected(true)
                .build(),
        );
        assert_eq!(pair_event(&exhausted), Some(PairEvent::QrExhausted));
    }

    #[test]
    fn connected_after_a_prompt_is_a_new_link() {
        let mut p = PairProgress::default();
        assert_eq!(
            p.step(PairEvent::Qr("a".into())),
            PairStep::ShowQr("a".into())
        );
        assert_eq!(
            p.step(PairEvent::Qr("b".into())),
            PairStep::ShowQr("b".into())
        );
        assert!(matches!(p.step(PairEvent::Linked), PairStep::Note(_)));
        assert_eq!(
            p.step(PairEvent::Connected),
            PairStep::Done(PairOutcome::Authenticated)
        );
    }

    #[test]
    fn connected_without_a_prompt_means_already_paired() {
        let mut p = PairProgress::default();
        assert_eq!(
            p.step(PairEvent::Connected),
            PairStep::Done(PairOutcome::AlreadyAuthenticated)
        );
    }

    #[test]
    fn failures_map_to_contract_status_reasons() {
        let mut p = PairProgress::default();
        assert_eq!(
            p.step(PairEvent::LoggedOut),
            PairStep::Fail("logged_out".into())
        );
        assert_eq!(
            p.step(PairEvent::QrExhausted),
            PairStep::Fail("qr_timeout".into())
        );
        assert_eq!(
            p.step(PairEvent::Failed("rate\nlimited".into())),
            PairStep::Fail("rate limited".into())
        );
        assert_eq!(
            p.step(PairEvent::Failed("  ".into())),
            PairStep::Fail("unknown".into())
        );
    }

    #[test]
    fn phone_numbers_are_normalised_or_rejected() {
        assert_eq!(normalize_phone("+1 555-123-4567").unwrap(), "15551234567");
        assert_eq!(normalize_phone("491701234567").unwrap(), "491701234567");
        for bad in [
            "",
            "+",
            "0123456789",
            "12345",
            "1234567890123456",
            "1555abc4567",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
    }
}
