//! The wall clock the scheduler compares `next_run` values against.
//!
//! Production reads the system clock. Tests and the benchmark anchor a wall-clock instant to tokio's
//! clock, so a paused tokio clock also pauses (and auto-advances) the scheduler's notion of "now".

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Source of "now" for the scheduler.
#[derive(Debug, Clone)]
pub enum Clock {
    /// `Utc::now()`.
    System,
    /// `wall` at tokio instant `at`, advancing with tokio's clock.
    Anchored { wall: DateTime<Utc>, at: Instant },
}

impl Clock {
    /// The system wall clock.
    pub fn system() -> Self {
        Self::System
    }

    /// A clock that reads `wall` now and then advances with tokio time. Must be called inside a runtime.
    pub fn anchored(wall: DateTime<Utc>) -> Self {
        Self::Anchored {
            wall,
            at: Instant::now(),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Anchored { wall, at } => {
                let elapsed = TimeDelta::from_std(at.elapsed()).unwrap_or(TimeDelta::MAX);
                wall.checked_add_signed(elapsed).unwrap_or(*wall)
            }
        }
    }
}
