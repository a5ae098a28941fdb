//! Screens a Worker script before it runs: the denylist of host-destroying
//! commands lives in [`fleet_common::script_screen`], shared with the
//! coordinator's dream stage (which screens a skill before promoting it).
//! Bans accepted onto the knowledge repo's `main` are checked the same way
//! ([`Guidance::check_bans`](super::Guidance::check_bans)).

pub use fleet_common::script_screen::{code_lines, screen, Refusal};
