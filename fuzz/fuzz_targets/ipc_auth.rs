//! Drives the authorization function with arbitrary worlds (registered groups, tasks), sources and
//! operations, and checks the matrix of contract §8.11 as properties: deny by default, non-main only
//! ever touches its own folder, main-only operations stay main-only.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nanoclaw::core::ipc_auth::{
    Decision, DenyReason, Operation, Source, TargetLookup, authorize, groups_visible, task_visible,
};

const JIDS: [&str; 5] = ["main@g.us", "a@g.us", "b@g.us", "c@s.whatsapp.net", "d@lid"];
const FOLDERS: [&str; 5] = ["main", "a", "b", "c", "main-2"];
const TASKS: [&str; 4] = ["t0", "t1", "t2", "t3"];

#[derive(Arbitrary, Debug)]
struct Input {
    groups: Vec<(u8, u8)>,
    tasks: Vec<(u8, u8)>,
    source: SourceIn,
    op: OpIn,
}

#[derive(Arbitrary, Debug)]
enum SourceIn {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum OpIn {
    Send(u8),
    SendRaw(String),
    Schedule(u8),
    Pause(u8),
    Resume(u8),
    Cancel(u8),
    CancelRaw(String),
    Refresh,
    Register(u8, u8),
    RegisterRaw(String, String),
}

struct World {
    groups: Vec<(&'static str, &'static str)>,
    tasks: Vec<(&'static str, &'static str)>,
}

impl TargetLookup for World {
    fn folder_of_jid(&self, jid: &str) -> Option<&str> {
        self.groups.iter().find(|(j, _)| *j == jid).map(|(_, f)| *f)
    }
    fn folder_of_task(&self, id: &str) -> Option<&str> {
        self.tasks.iter().find(|(t, _)| *t == id).map(|(_, f)| *f)
    }
    fn jid_of_folder(&self, folder: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(_, f)| *f == folder)
            .map(|(j, _)| *j)
    }
}

fn pick<T: Copy>(pool: &[T], i: u8) -> T {
    pool[usize::from(i) % pool.len()]
}

fuzz_target!(|input: Input| {
    // Registered groups are unique by JID and by folder, as the store enforces.
    let mut world = World {
        groups: Vec::new(),
        tasks: Vec::new(),
    };
    for (j, f) in input.groups.iter().take(8) {
        let (jid, folder) = (pick(&JIDS, *j), pick(&FOLDERS, *f));
        if world.folder_of_jid(jid).is_none() && world.jid_of_folder(folder).is_none() {
            world.groups.push((jid, folder));
        }
    }
    for (t, f) in input.tasks.iter().take(8) {
        let id = pick(&TASKS, *t);
        if world.folder_of_task(id).is_none() {
            world.tasks.push((id, pick(&FOLDERS, *f)));
        }
    }
    let source_name = match &input.source {
        SourceIn::Known(i) => pick(&FOLDERS, *i).to_string(),
        SourceIn::Raw(s) => s.clone(),
    };
    let source = Source::from_dir(&source_name);
    assert_eq!(source.is_main, source_name == "main");

    let op = match &input.op {
        OpIn::Send(i) => Operation::SendMessage {
            chat_jid: pick(&JIDS, *i),
        },
        OpIn::SendRaw(s) => Operation::SendMessage { chat_jid: s },
        OpIn::Schedule(i) => Operation::ScheduleTask {
            target_jid: pick(&JIDS, *i),
        },
        OpIn::Pause(i) => Operation::PauseTask {
            task_id: pick(&TASKS, *i),
        },
        OpIn::Resume(i) => Operation::ResumeTask {
            task_id: pick(&TASKS, *i),
        },
        OpIn::Cancel(i) => Operation::CancelTask {
            task_id: pick(&TASKS, *i),
        },
        OpIn::CancelRaw(s) => Operation::CancelTask { task_id: s },
        OpIn::Refresh => Operation::RefreshGroups,
        OpIn::Register(j, f) => Operation::RegisterGroup {
            jid: pick(&JIDS, *j),
            folder: pick(&FOLDERS, *f),
        },
        OpIn::RegisterRaw(j, f) => Operation::RegisterGroup { jid: j, folder: f },
    };
    let decision = authorize(source, op, &world);
    assert_eq!(decision, authorize(source, op, &world), "deterministic");

    // The target folder an operation acts on, if it has one.
    let target_folder = match op {
        Operation::SendMessage { chat_jid }
        | Operation::ScheduleTask {
            target_jid: chat_jid,
        } => world.folder_of_jid(chat_jid),
        Operation::PauseTask { task_id }
        | Operation::ResumeTask { task_id }
        | Operation::CancelTask { task_id } => world.folder_of_task(task_id),
        _ => None,
    };

    if !source.is_main {
        match op {
            Operation::RefreshGroups | Operation::RegisterGroup { .. } => {
                assert_eq!(decision, Decision::Deny(DenyReason::MainOnly));
            }
            _ => assert_eq!(
                decision.is_allowed(),
                target_folder == Some(source.folder),
                "non-main acts exactly on its own folder: {op:?} from {source:?}"
            ),
        }
        assert!(!groups_visible(source));
    } else {
        let expect_allowed = match op {
            Operation::SendMessage { .. } | Operation::RefreshGroups => true,
            Operation::ScheduleTask { .. }
            | Operation::PauseTask { .. }
            | Operation::ResumeTask { .. }
            | Operation::CancelTask { .. } => target_folder.is_some(),
            Operation::RegisterGroup { jid, folder } => {
                let reserved = folder == "main" && world.folder_of_jid(jid) != Some("main");
                let taken = world
                    .jid_of_folder(folder)
                    .is_some_and(|holder| holder != jid);
                !reserved && !taken
            }
        };
        assert_eq!(decision.is_allowed(), expect_allowed, "main: {op:?}");
        assert!(groups_visible(source));
    }
    if let Some(folder) = target_folder {
        assert_eq!(
            task_visible(source, folder),
            source.is_main || folder == source.folder
        );
    }
});
