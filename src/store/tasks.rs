//! `scheduled_tasks` and `task_run_logs` (contract §2.5, §2.6, §6).

use rusqlite::{Connection, OptionalExtension, Row, params, types::Value};

use crate::core::types::{
    ContextMode, RunLogStatus, ScheduleType, ScheduledTask, TaskRunLog, TaskStatus, TaskUpdate,
};
use crate::store::{Result, Store};

const TASK_COLUMNS: &str = "id, group_folder, chat_jid, prompt, schedule_type, schedule_value, \
     next_run, last_run, last_result, status, created_at, context_mode";

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduledTask> {
    Ok(ScheduledTask {
        id: row.get(0)?,
        group_folder: row.get(1)?,
        chat_jid: row.get(2)?,
        prompt: row.get(3)?,
        schedule_type: ScheduleType::parse(&row.get::<_, String>(4)?),
        schedule_value: row.get(5)?,
        next_run: row.get(6)?,
        last_run: row.get(7)?,
        last_result: row.get(8)?,
        status: TaskStatus::parse(&row.get::<_, Option<String>>(9)?.unwrap_or_default()),
        created_at: row.get(10)?,
        context_mode: ContextMode::parse(&row.get::<_, Option<String>>(11)?.unwrap_or_default()),
    })
}

fn insert_log(conn: &Connection, log: &TaskRunLog) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO task_run_logs (task_id, run_at, duration_ms, status, result, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            log.task_id,
            log.run_at,
            log.duration_ms,
            log.status.as_str(),
            log.result,
            log.error
        ],
    )
}

impl Store {
    /// Inserts a new task with `last_run` and `last_result` NULL (contract §2.5).
    pub fn create_task(&self, t: &ScheduledTask) -> Result<()> {
        self.count();
        self.conn.execute(
            "INSERT INTO scheduled_tasks (id, group_folder, chat_jid, prompt, schedule_type,
               schedule_value, next_run, status, created_at, context_mode)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                t.id,
                t.group_folder,
                t.chat_jid,
                t.prompt,
                t.schedule_type.as_str(),
                t.schedule_value,
                t.next_run,
                t.status.as_str(),
                t.created_at,
                t.context_mode.as_str()
            ],
        )?;
        Ok(())
    }

    pub fn get_task(&self, id: &str) -> Result<Option<ScheduledTask>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM scheduled_tasks WHERE id = ?1"
        ))?;
        Ok(stmt.query_row([id], task_from_row).optional()?)
    }

    /// Changes only the provided fields; an empty update does nothing (contract §2.5). Returns whether a
    /// row was changed.
    pub fn update_task(&self, id: &str, update: &TaskUpdate) -> Result<bool> {
        if update.is_empty() {
            return Ok(false);
        }
        self.count();
        let mut sets: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(p) = &update.prompt {
            sets.push("prompt = ?");
            args.push(p.clone().into());
        }
        if let Some(t) = &update.schedule_type {
            sets.push("schedule_type = ?");
            args.push(t.as_str().to_string().into());
        }
        if let Some(v) = &update.schedule_value {
            sets.push("schedule_value = ?");
            args.push(v.clone().into());
        }
        if let Some(n) = &update.next_run {
            sets.push("next_run = ?");
            args.push(n.clone().map_or(Value::Null, Value::Text));
        }
        if let Some(s) = &update.status {
            sets.push("status = ?");
            args.push(s.as_str().to_string().into());
        }
        args.push(id.to_string().into());
        let sql = format!(
            "UPDATE scheduled_tasks SET {} WHERE id = ?",
            sets.join(", ")
        );
        let n = self.conn.execute(&sql, rusqlite::params_from_iter(args))?;
        Ok(n > 0)
    }

    /// Deletes a task and its run logs in one transaction, logs first (foreign key order). Returns whether
    /// the task existed.
    pub fn delete_task(&mut self, id: &str) -> Result<bool> {
        self.count();
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM task_run_logs WHERE task_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM scheduled_tasks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Active tasks with `next_run <= now`, earliest first (contract §2.6).
    pub fn due_tasks(&self, now: &str) -> Result<Vec<ScheduledTask>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM scheduled_tasks
             WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= ?1
             ORDER BY next_run"
        ))?;
        let rows = stmt.query_map([now], task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The earliest `next_run` of any active task: how long the scheduler may sleep.
    pub fn next_due_time(&self) -> Result<Option<String>> {
        self.count();
        Ok(self.conn.query_row(
            "SELECT MIN(next_run) FROM scheduled_tasks WHERE status = 'active' AND next_run IS NOT NULL",
            [],
            |r| r.get::<_, Option<String>>(0),
        )?)
    }

    /// Every task, newest first.
    pub fn all_tasks(&self) -> Result<Vec<ScheduledTask>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM scheduled_tasks ORDER BY created_at DESC"
        ))?;
        let rows = stmt.query_map([], task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The tasks of one group folder, newest first.
    pub fn tasks_for_group(&self, folder: &str) -> Result<Vec<ScheduledTask>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM scheduled_tasks WHERE group_folder = ?1 ORDER BY created_at DESC"
        ))?;
        let rows = stmt.query_map([folder], task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends a run log (contract §2.5).
    pub fn log_task_run(&self, log: &TaskRunLog) -> Result<()> {
        self.count();
        insert_log(&self.conn, log)?;
        Ok(())
    }

    /// The after-run update and its run log as one transaction (contract §2.5, §6.11–6.12): set next_run,
    /// last_run, last_result, and `completed` only when next_run is NULL. A task cancelled during its run
    /// is tolerated: nothing is written and `false` is returned, instead of the original's foreign-key
    /// failure (contract §12.9).
    pub fn finish_task_run(
        &mut self,
        id: &str,
        next_run: Option<&str>,
        last_result: &str,
        log: &TaskRunLog,
    ) -> Result<bool> {
        self.count();
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE scheduled_tasks
             SET next_run = ?1, last_run = ?2, last_result = ?3,
                 status = CASE WHEN ?1 IS NULL THEN 'completed' ELSE status END
             WHERE id = ?4",
            params![next_run, log.run_at, last_result, id],
        )?;
        if n > 0 {
            insert_log(&tx, log)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Run logs of a task, oldest first.
    pub fn task_run_logs(&self, task_id: &str) -> Result<Vec<TaskRunLog>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(
            "SELECT task_id, run_at, duration_ms, status, result, error FROM task_run_logs
             WHERE task_id = ?1 ORDER BY run_at, id",
        )?;
        let rows = stmt.query_map([task_id], |r| {
            Ok(TaskRunLog {
                task_id: r.get(0)?,
                run_at: r.get(1)?,
                duration_ms: r.get(2)?,
                status: if r.get::<_, String>(3)? == "success" {
                    RunLogStatus::Success
                } else {
                    RunLogStatus::Error
                },
                result: r.get(4)?,
                error: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
