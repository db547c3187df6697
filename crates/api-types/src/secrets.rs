//! An app's secrets: `wharf secret set|ls|rm`. Values travel only in a
//! set's request body; no answer ever holds one.

use serde::{Deserialize, Serialize};

/// `PUT /v1/apps/{app}/secrets/{name}`: the value, as UTF-8 text.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretSetRequest {
    pub value: String,
}

/// Never shows the value (requests end up in debug output).
impl std::fmt::Debug for SecretSetRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSetRequest { value: *** }")
    }
}

/// The answer to a set: what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSet {
    pub app: String,
    pub name: String,
    /// "created", "changed" or "unchanged" (the same value again).
    pub outcome: String,
    /// Deployed services that use it: a deploy gives them a new revision
    /// when it changed.
    pub used_by: Vec<String>,
}

/// `GET /v1/apps/{app}/secrets`: one secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// Deployed services whose current revision takes it.
    pub used_by: Vec<String>,
}

/// The answer to a remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRemoved {
    pub app: String,
    pub name: String,
    /// Deployed services that still used it (a forced remove): their new
    /// tasks cannot start until it is set again or they are deployed without it.
    pub used_by: Vec<String>,
}

/// `DELETE /v1/apps/{app}/secrets/{name}`: `force` removes it even while
/// deployed services use it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecretRemoveQuery {
    #[serde(default)]
    pub force: bool,
}
