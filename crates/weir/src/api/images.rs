use serde::{Deserialize, Serialize};

use super::Extra;

/// `POST /v1/images/generations` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRequest {
    /// What to draw.
    pub prompt: String,
    /// Model group name; required by the gateway to route.
    pub model: String,
    /// How many images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// e.g. `1024x1024`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// `url` or `b64_json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<String>,
    /// Quality, where supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Unknown fields (style, background, user...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ImagesResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: i64,
    /// The images.
    #[serde(default)]
    pub data: Vec<Image>,
    /// Unknown fields (usage...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One generated image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Where to fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The image, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// The prompt the model actually used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}
