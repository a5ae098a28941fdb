//! Real machines: Docker and SSH targets from `fleet-targets`, the
//! OpenSCAP Evaluator on them, and the `ssg` brain that proposes the SCAP
//! content's own fix. Everything here runs on the target, never on the
//! agent's host (DESIGN T1): even `oscap` runs inside the target.

mod brain;
mod evaluator;
mod machine;
mod one_rule;
mod setup;
pub(crate) mod shell;

pub use brain::SsgBrain;
pub use evaluator::{map_status, OscapEvaluator};
pub use machine::{Machine, MachineTarget};
pub use one_rule::one_rule_datastream;
pub use setup::{real_workbenches, remove_all};
