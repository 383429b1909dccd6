use serde::{Deserialize, Serialize};

/// A model, as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Model name.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Organisation owning it.
    #[serde(default)]
    pub owned_by: String,
}

/// `GET /v1/models` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}
