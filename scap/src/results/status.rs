//! A rule's XCCDF result, one variant per value of the XCCDF 1.2
//! `resultEnumType`, so nothing oscap can say is lost.

use std::fmt;

/// | XCCDF `result`  | variant          | meaning for the fleet                                   |
/// |-----------------|------------------|---------------------------------------------------------|
/// | `pass`          | `Pass`           | compliant                                               |
/// | `fail`          | `Fail`           | not compliant: remediate; failing details are kept      |
/// | `error`         | `Error`          | the check could not run (probe error); details kept     |
/// | `unknown`       | `Unknown`        | the check ran but could not decide; details kept        |
/// | `notapplicable` | `NotApplicable`  | the rule's platform (CPE) does not match the target     |
/// | `notchecked`    | `NotChecked`     | no check oscap can run (e.g. OCIL only)                 |
/// | `notselected`   | `NotSelected`    | not in the profile / not the `--rule` asked for         |
/// | `informational` | `Informational`  | the check only reports, it does not judge               |
/// | `fixed`         | `Fixed`          | failed, oscap's `--remediate` fixed it, re-check passed |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleStatus {
    Pass,
    Fail,
    NotApplicable,
    Error,
    NotChecked,
    Informational,
    NotSelected,
    Unknown,
    Fixed,
}

impl RuleStatus {
    /// `None` for a value outside the XCCDF vocabulary.
    pub fn from_xccdf(value: &str) -> Option<Self> {
        Some(match value {
            "pass" => Self::Pass,
            "fail" => Self::Fail,
            "notapplicable" => Self::NotApplicable,
            "error" => Self::Error,
            "notchecked" => Self::NotChecked,
            "informational" => Self::Informational,
            "notselected" => Self::NotSelected,
            "unknown" => Self::Unknown,
            "fixed" => Self::Fixed,
            _ => return None,
        })
    }

    /// The XCCDF spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NotApplicable => "notapplicable",
            Self::Error => "error",
            Self::NotChecked => "notchecked",
            Self::Informational => "informational",
            Self::NotSelected => "notselected",
            Self::Unknown => "unknown",
            Self::Fixed => "fixed",
        }
    }

    /// The rule is compliant now (`Pass`, or `Fixed` by oscap itself).
    pub fn is_compliant(self) -> bool {
        matches!(self, Self::Pass | Self::Fixed)
    }

    /// The check's details are worth a Reflector's reading: it failed, or it
    /// could not decide.
    pub fn has_details(self) -> bool {
        matches!(self, Self::Fail | Self::Error | Self::Unknown)
    }
}

impl fmt::Display for RuleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_xccdf_value_round_trips() {
        for value in [
            "pass",
            "fail",
            "notapplicable",
            "error",
            "notchecked",
            "informational",
            "notselected",
            "unknown",
            "fixed",
        ] {
            assert_eq!(RuleStatus::from_xccdf(value).unwrap().as_str(), value);
        }
        assert_eq!(RuleStatus::from_xccdf("PASS"), None);
        assert_eq!(RuleStatus::from_xccdf(""), None);
    }
}
