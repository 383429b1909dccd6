//! The `cache:` settings. They are part of the configuration schema (`crate::config::cache`,
//! validated with the rest of the file); re-exported here under their historical path.

pub use crate::config::{CacheConfig, CacheStrategy, MemoryCacheConfig, RedisCacheConfig};
