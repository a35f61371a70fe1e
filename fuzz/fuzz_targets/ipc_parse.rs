//! Feeds arbitrary bytes to the IPC command parser (messages/ or tasks/, chosen by the first byte) and
//! checks that it never panics and that everything it accepts satisfies the validator's promises.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use nanoclaw::core::ipc::{
    IpcCommand, IpcKind, MAX_IPC_FILE_BYTES, MAX_JID_BYTES, MAX_TASK_ID_BYTES, MAX_TEXT_BYTES,
    is_valid_jid, parse_command,
};
use nanoclaw::core::schedule::parse_schedule;
use nanoclaw::core::types::validate_folder;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        IpcKind::Messages
    } else {
        IpcKind::Tasks
    };
    let result = parse_command(kind, body);
    // Deterministic.
    assert_eq!(
        format!("{:?}", parse_command(kind, body)),
        format!("{result:?}")
    );
    let Ok(command) = result else {
        return;
    };
    assert!(body.len() <= MAX_IPC_FILE_BYTES);
    check(&command);
    // Re-encoding the same JSON value must not change the verdict.
    let value: serde_json::Value = serde_json::from_slice(body).expect("accepted input is JSON");
    let again =
        parse_command(kind, value.to_string().as_bytes()).expect("re-encoded input accepted");
    assert_eq!(again.name(), command.name());
});

fn check(command: &IpcCommand) {
    let id_ok = |s: &str, max: usize| {
        !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
    };
    match command {
        IpcCommand::SendMessage { chat_jid, text } => {
            assert!(is_valid_jid(chat_jid) && chat_jid.len() <= MAX_JID_BYTES);
            assert!(
                !text.trim().is_empty() && text.len() <= MAX_TEXT_BYTES && !text.contains('\0')
            );
        }
        IpcCommand::ScheduleTask {
            prompt,
            schedule_type,
            schedule_value,
            schedule,
            target_jid,
            ..
        } => {
            assert!(is_valid_jid(target_jid));
            assert!(
                !prompt.trim().is_empty()
                    && prompt.len() <= MAX_TEXT_BYTES
                    && !prompt.contains('\0')
            );
            assert!(parse_schedule(schedule_type.as_str(), schedule_value).is_ok());
            // Next-run computation must not panic for any accepted schedule, zone or clock.
            for (secs, tz) in [
                (0_i64, chrono_tz::UTC),
                (1_770_714_010, chrono_tz::America::New_York),
                (4_102_444_800, chrono_tz::Australia::Lord_Howe),
            ] {
                if let Some(now) = Utc.timestamp_opt(secs, 0).single() {
                    let _ = schedule.first_run(now, tz);
                    let _ = schedule.after_run(now, tz);
                }
            }
        }
        IpcCommand::PauseTask { task_id }
        | IpcCommand::ResumeTask { task_id }
        | IpcCommand::CancelTask { task_id } => assert!(id_ok(task_id, MAX_TASK_ID_BYTES)),
        IpcCommand::RefreshGroups => {}
        IpcCommand::RegisterGroup {
            jid,
            folder,
            name,
            trigger,
            ..
        } => {
            assert!(is_valid_jid(jid));
            assert!(validate_folder(folder, true).is_ok());
            assert!(!folder.contains('/') && !folder.contains('.') && !folder.contains('\0'));
            assert!(id_ok(name, 256) && id_ok(trigger, 128));
        }
    }
}
