//! A deterministic simulation of brain, target and evaluator, for tests and
//! for `make fleet` before Docker targets and OpenSCAP exist.
//!
//! Each rule's fate is a pure function of an FNV-1a hash of its id (see
//! [`behaviour`]): about 10 % pass already, 70 % are fixed by attempt 1, 2
//! or 3, and 20 % never pass. An attempt costs `work` of simulated time,
//! half in exec and half in evaluation. Nothing runs on the host (DESIGN T1).

mod brain;
mod hash;
mod machine;
mod plan;

use std::sync::Arc;
use std::time::Duration;

pub use brain::SimBrain;
pub use hash::fnv1a64;
pub use machine::{script_for, SimEvaluator, SimMachine, SimTarget};
pub use plan::{behaviour, expected_outcome, SimBehaviour};

use crate::workbench::Workbench;

/// One slot's simulated workbench: a fresh machine shared by its target and
/// evaluator.
pub fn workbench(work: Duration) -> Workbench {
    let machine = SimMachine::default();
    Workbench {
        brain: Arc::new(SimBrain),
        target: Arc::new(SimTarget {
            machine: machine.clone(),
            work,
        }),
        evaluator: Arc::new(SimEvaluator { machine, work }),
    }
}
