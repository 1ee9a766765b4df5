//! The one plan shape. Every mutating command observes, computes a [`Plan`] of typed steps
//! from what it saw (pure, testable), and runs it through [`apply`]. `--dry-run` renders the
//! plan and runs nothing; rollback and undo read the steps' inverses; a plan file of a later
//! command serialises the same steps. Each command has its own step type (libvirt calls,
//! netlink changes, files), all of them with this shape.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// One change a command can make.
pub trait Step: Sized {
    /// One line a person reads (dry run, reports), in the command's words.
    fn describe(&self) -> String;
    /// The step that undoes this one; None when nothing can undo it (or nothing needs to).
    fn inverse(&self) -> Option<Self>;
}

/// Steps, in the order they run. Empty means "no change".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Plan<S> {
    pub steps: Vec<S>,
}

impl<S> Default for Plan<S> {
    fn default() -> Self {
        Plan { steps: Vec::new() }
    }
}

impl<S: Step> Plan<S> {
    pub fn new(steps: Vec<S>) -> Self {
        Plan { steps }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The plan as lines a person reads.
    pub fn describe(&self) -> Vec<String> {
        self.steps.iter().map(Step::describe).collect()
    }

    /// The steps that undo the first `applied` steps, last first (those without an inverse
    /// are skipped).
    pub fn undo_of(&self, applied: usize) -> Vec<S> {
        self.steps[..applied.min(self.steps.len())]
            .iter()
            .rev()
            .filter_map(Step::inverse)
            .collect()
    }

    /// The steps that undo the whole plan.
    pub fn undo(&self) -> Vec<S> {
        self.undo_of(self.steps.len())
    }
}

/// What carries steps out against the world (libvirt, netlink, sysfs, files).
pub trait Applier<S> {
    fn apply_step(&mut self, step: &S) -> Result<(), Error>;
}

/// A plan that stopped at a failing step.
#[derive(Debug)]
pub struct Stopped {
    /// The failing step's error, with the step named.
    pub error: Error,
    /// How many steps went through before it.
    pub applied: usize,
}

/// Run `steps` in order through `by`, stopping at the first failure. The caller decides
/// what a failure means (undo the applied steps with [`Plan::undo_of`], compare the world
/// with what it was, or keep going with other plans).
pub fn apply<S: Step>(steps: &[S], by: &mut impl Applier<S>) -> Result<(), Stopped> {
    for (i, s) in steps.iter().enumerate() {
        if let Err(e) = by.apply_step(s) {
            return Err(Stopped {
                error: e.context(format!("step {:?}", s.describe())),
                applied: i,
            });
        }
    }
    Ok(())
}

/// Run the plan; on a failure run the inverses of the steps already applied, and return the
/// failing step's error, with a hint saying whether the rollback went through.
pub fn apply_or_roll_back<S: Step>(plan: &Plan<S>, by: &mut impl Applier<S>) -> Result<(), Error> {
    let Err(stopped) = apply(&plan.steps, by) else {
        return Ok(());
    };
    let problems: Vec<String> = plan
        .undo_of(stopped.applied)
        .iter()
        .filter_map(|s| by.apply_step(s).err().map(|e| e.message))
        .collect();
    let hint = if problems.is_empty() {
        if stopped.applied == 0 {
            "nothing was changed".to_string()
        } else {
            format!(
                "nothing was changed: the {} step(s) already made were undone",
                stopped.applied
            )
        }
    } else {
        format!(
            "undoing the steps already made did not go through: {}",
            problems.join("; ")
        )
    };
    Err(stopped.error.with_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum S {
        On(u8),
        Off(u8),
        Log(u8),
    }

    impl Step for S {
        fn describe(&self) -> String {
            format!("{self:?}")
        }
        fn inverse(&self) -> Option<S> {
            match self {
                S::On(n) => Some(S::Off(*n)),
                S::Off(n) => Some(S::On(*n)),
                S::Log(_) => None,
            }
        }
    }

    /// Records what ran; fails on the step it is told to.
    struct World {
        ran: Vec<S>,
        fail_on: Option<S>,
    }

    impl Applier<S> for World {
        fn apply_step(&mut self, s: &S) -> Result<(), Error> {
            if self.fail_on.as_ref() == Some(s) {
                return Err(Error::host("boom"));
            }
            self.ran.push(s.clone());
            Ok(())
        }
    }

    #[test]
    fn undo_is_the_inverses_last_first_without_the_irreversible() {
        let p = Plan::new(vec![S::On(1), S::Log(2), S::Off(3)]);
        assert_eq!(p.undo(), vec![S::On(3), S::Off(1)]);
        assert_eq!(p.undo_of(1), vec![S::Off(1)]);
        assert_eq!(p.undo_of(0), vec![]);
        assert_eq!(p.describe(), vec!["On(1)", "Log(2)", "Off(3)"]);
        assert!(Plan::<S>::default().is_empty());
    }

    #[test]
    fn a_failing_step_stops_the_plan_and_rolls_back_what_ran() {
        let p = Plan::new(vec![S::On(1), S::On(2), S::On(3)]);
        let mut w = World {
            ran: vec![],
            fail_on: Some(S::On(3)),
        };
        let e = apply_or_roll_back(&p, &mut w).unwrap_err();
        assert_eq!(w.ran, vec![S::On(1), S::On(2), S::Off(2), S::Off(1)]);
        assert!(e.message.contains("On(3)"), "{}", e.message);
        assert!(e
            .hint
            .unwrap()
            .contains("2 step(s) already made were undone"));

        let mut w = World {
            ran: vec![],
            fail_on: None,
        };
        apply_or_roll_back(&p, &mut w).unwrap();
        assert_eq!(w.ran, p.steps);
    }

    #[test]
    fn apply_reports_how_far_it_got() {
        let mut w = World {
            ran: vec![],
            fail_on: Some(S::Off(9)),
        };
        let stopped = apply(&[S::On(1), S::Off(9), S::On(2)], &mut w).unwrap_err();
        assert_eq!(stopped.applied, 1);
        assert_eq!(w.ran, vec![S::On(1)]);
    }
}
