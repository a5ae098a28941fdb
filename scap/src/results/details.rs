//! What a failing OVAL check looked at: the criteria tree with each test's
//! verdict and, for the tests that did not come out true, the object
//! searched for, the state expected, and the items found on the target.

/// One OVAL definition a rule's check named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDetails {
    /// e.g. `oval:ssg-package_audit_installed:def:1`.
    pub definition_id: String,
    pub title: Option<String>,
    /// OVAL definition result: `true`, `false`, `error`, `unknown`, …
    pub result: String,
    /// `None` when the results hold no such definition.
    pub criteria: Option<CriteriaNode>,
}

/// A node of a definition's criteria. `result` is OVAL's, after `negate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriteriaNode {
    Criteria {
        operator: String,
        negate: bool,
        comment: Option<String>,
        result: String,
        children: Vec<CriteriaNode>,
    },
    Criterion {
        test_id: String,
        negate: bool,
        comment: Option<String>,
        result: String,
        /// Only for criteria that did not come out true.
        test: Option<Box<TestDetails>>,
    },
    ExtendDefinition {
        definition_id: String,
        negate: bool,
        comment: Option<String>,
        result: String,
        /// The extended definition's own criteria, only when it did not come
        /// out true.
        criteria: Option<Box<CriteriaNode>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDetails {
    pub id: String,
    /// Element name, e.g. `textfilecontent54_test`, `dpkginfo_test`.
    pub kind: String,
    pub comment: Option<String>,
    pub check: Option<String>,
    pub check_existence: Option<String>,
    pub result: String,
    pub object: Option<ObjectDetails>,
    /// What the items had to look like.
    pub states: Vec<StateDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDetails {
    pub id: String,
    /// e.g. `textfilecontent54_object`; empty if the definition is missing.
    pub kind: String,
    /// What the object asks for (`filepath`, `pattern`, `name`, …).
    pub entities: Vec<Field>,
    /// Collection flag: `complete`, `does not exist`, `error`, …
    pub flag: Option<String>,
    pub messages: Vec<String>,
    /// Items found (at most [`MAX_ITEMS`]), with the test's verdict on each.
    pub items: Vec<Item>,
    /// Items found beyond [`MAX_ITEMS`].
    pub items_omitted: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDetails {
    pub id: String,
    pub kind: String,
    pub entities: Vec<Field>,
}

/// A system-characteristics item, e.g. a `textfilecontent_item` with its
/// `filepath` and matched `text`, or a `dpkginfo_item` with `name` and `evr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub kind: String,
    /// `exists`, `does not exist`, `error`, …
    pub status: Option<String>,
    /// The test's result for this item (`true`/`false`), when recorded.
    pub result: Option<String>,
    pub fields: Vec<Field>,
}

/// A child element of an object, state or item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// OVAL `operation` when not plain equality (e.g. `pattern match`).
    pub operation: Option<String>,
    pub value: String,
}

/// Items kept per object: a Reflector needs examples, not every file.
pub const MAX_ITEMS: usize = 32;
