//! API paths that can never leave the upstream's API root.
//!
//! The gateway forwards unknown `/v1/*` paths to the chosen upstream. A path like `../admin`,
//! `%2e%2e/`, `//evil.example/x` or `http://evil/` must not turn into a request to another place
//! (or another host, carrying our key). [`ApiPath`] accepts only plain segments of unreserved
//! characters, and [`ApiPath::join_onto`] re-checks the joined URL's scheme, host, port and prefix.

use std::fmt;

use url::Url;

use crate::error::Error;

/// A validated relative API path such as `chat/completions` or `files/file-abc/content`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiPath(String);

impl ApiPath {
    /// Validates a path relative to the API root (no leading `/`: `//host/x` must not become `/host/x`).
    pub fn parse(rel: &str) -> Result<ApiPath, Error> {
        let invalid = |why: &str| Error::NotFound {
            message: format!("Invalid URL path ({why})."),
        };
        if rel.is_empty() {
            return Err(invalid("empty path"));
        }
        for segment in rel.split('/') {
            if segment.is_empty() {
                return Err(invalid("empty path segment"));
            }
            // `..;` and friends are normalised to `..` by some servers and proxies.
            if segment == "." || segment.starts_with("..") {
                return Err(invalid("dot segments are not allowed"));
            }
            // Percent-encoding could smuggle `/`, `\` or dots past the checks above, and sub-delims
            // (`;`, `,`, `=`...) mean things to some servers; upstream IDs need neither.
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:@".contains(&b))
            {
                return Err(invalid(
                    "only letters, digits and - . _ ~ : @ are allowed in path segments",
                ));
            }
        }
        Ok(ApiPath(rel.to_owned()))
    }

    /// A path known to be valid at compile time (`chat/completions`...).
    pub(crate) fn known(path: &'static str) -> ApiPath {
        ApiPath(path.to_owned())
    }

    /// The path without a leading slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base` + `/` + this path (+ `?query`), verified to stay under `base`.
    pub fn join_onto(&self, base: &Url, query: Option<&str>) -> Result<Url, Error> {
        let mut url = base.clone();
        let prefix = base.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/{}", self.0));
        url.set_query(query.filter(|q| !q.is_empty()));
        let escaped = url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
            || !url.path().starts_with(&format!("{prefix}/"));
        if escaped {
            return Err(Error::NotFound {
                message: "Invalid URL path (it leaves the upstream API root).".to_owned(),
            });
        }
        Ok(url)
    }
}

impl fmt::Display for ApiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_join_under_the_base() {
        let base = Url::parse("https://api.example.com/v1").unwrap();
        let p = ApiPath::parse("files/file-abc_1.jsonl/content").unwrap();
        assert_eq!(
            p.join_onto(&base, Some("limit=2")).unwrap().as_str(),
            "https://api.example.com/v1/files/file-abc_1.jsonl/content?limit=2"
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "../admin",
            "a/../../b",
            "./x",
            "a//b",
            "%2e%2e/x",
            "a%2fb",
            "a\\..\\b",
            "//evil.example/x",
            "http://evil.example/x",
            "/files",
            "files/..;/admin",
            "a;b",
            "..x",
            "a b",
            "",
            "/",
            "a?b",
            "a#b",
            "a/%00",
        ] {
            assert!(ApiPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
