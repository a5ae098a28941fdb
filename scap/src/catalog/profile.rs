//! An XCCDF Profile: a named tailoring of the benchmark's selection.

use std::collections::HashMap;

use roxmltree::Node;

use super::selection::Select;
use crate::xml::{attr, boolean, is_xccdf, plain_text};
use crate::ScapError;

#[derive(Debug, Clone)]
pub struct Profile {
    /// Full id, e.g. `xccdf_org.ssgproject.content_profile_standard`.
    pub id: String,
    /// The id after `_profile_` (`standard`); profiles can be named either way.
    pub short_id: String,
    pub title: String,
    pub description: String,
    /// The profile whose selects apply first.
    pub extends: Option<String>,
    /// `<select>`s in document order.
    pub selects: Vec<Select>,
}

impl Profile {
    pub(crate) fn from_node(
        node: Node,
        values: &HashMap<String, String>,
    ) -> Result<Self, ScapError> {
        let id = node.attribute("id").ok_or_else(|| ScapError::Invalid {
            what: "profile",
            message: "a profile has no id".to_owned(),
        })?;
        let mut profile = Profile {
            short_id: short_profile_id(id).to_owned(),
            id: id.to_owned(),
            title: String::new(),
            description: String::new(),
            extends: attr(node, "extends"),
            selects: Vec::new(),
        };
        for child in node.children().filter(|c| c.is_element()) {
            if is_xccdf(child, "title") && profile.title.is_empty() {
                profile.title = plain_text(child, values);
            } else if is_xccdf(child, "description") && profile.description.is_empty() {
                profile.description = plain_text(child, values);
            } else if is_xccdf(child, "select") {
                let (Some(idref), Some(selected)) =
                    (child.attribute("idref"), child.attribute("selected"))
                else {
                    return Err(ScapError::Invalid {
                        what: "profile",
                        message: format!("a select of {id} lacks idref or selected"),
                    });
                };
                profile.selects.push(Select {
                    idref: idref.to_owned(),
                    selected: boolean(selected, "select")?,
                });
            }
        }
        Ok(profile)
    }
}

/// `xccdf_<reverse-DNS>_profile_<name>` → `<name>`; other ids stay whole.
fn short_profile_id(id: &str) -> &str {
    id.strip_prefix("xccdf_")
        .and_then(|rest| rest.split_once("_profile_"))
        .map_or(id, |(_, name)| name)
}
