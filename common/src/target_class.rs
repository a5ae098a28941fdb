//! What kind of machine an agent's target is, as far as rules care: a
//! container cannot hold runtime kernel values or run an init system, a VM
//! can (issue 24). Packs say which rules need a VM; agents say what they
//! have; the planner routes by it.

use serde::{Deserialize, Serialize};

/// The class of an agent's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetClass {
    /// A container (or the simulation): files, packages, configuration.
    Container,
    /// A virtual machine (qemu, or the operator's over SSH): also the
    /// running kernel, systemd services and boot.
    Vm,
}

impl TargetClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Vm => "vm",
        }
    }

    /// The label back; `None` for one this build does not know.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Container, Self::Vm]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// Whether a target of this class can work a rule that needs `need`.
    pub fn can_serve(self, need: TargetClass) -> bool {
        self == Self::Vm || need == Self::Container
    }
}

impl std::fmt::Display for TargetClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::TargetClass::{Container, Vm};
    use super::*;

    #[test]
    fn a_vm_serves_every_rule_a_container_only_its_own() {
        assert!(Vm.can_serve(Vm) && Vm.can_serve(Container));
        assert!(Container.can_serve(Container) && !Container.can_serve(Vm));
        assert_eq!(TargetClass::parse("vm"), Some(Vm));
        assert_eq!(TargetClass::parse("VM"), None);
    }
}
