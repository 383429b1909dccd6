//! Config errors.

use std::fmt;

/// A config error: what is wrong, where (field path), and on which line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when loading from one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path such as `models[1].deployments[0].base_url`, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::error::Error {
    fn from(e: ConfigError) -> Self {
        crate::error::Error::Config(e.to_string())
    }
}

/// What is wrong inside one section of the file, as the section's own validation reports it
/// (`TryFrom<Raw…>`): a field path relative to the section, and the message. The loader places it:
/// [`FieldError::path_under`] prefixes the section's path (`models[0].deployments[1].retry.` +
/// `factor`) and the line is the section's unless the section knew a more precise one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path relative to the section (`factor`, `redis.url`); empty for the section as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line, when the section knows where the field is (a spanned value).
    pub line: Option<usize>,
}

impl FieldError {
    /// An error about `field` of the section.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }

    /// An error about the section as a whole (rules that span its fields).
    pub fn section(message: impl Into<String>) -> Self {
        FieldError::new(String::new(), message)
    }

    /// The same error, on the given 1-based line (0, "unknown", leaves the line as it was).
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = usize::try_from(line).ok().filter(|l| *l > 0).or(self.line);
        self
    }

    /// The same error, seen from the enclosing section: `prefix` is the path of this section
    /// inside it (`retry_budget` + `ratio` → `retry_budget.ratio`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = join(prefix, &self.field);
        self
    }

    /// The full field path when the section sits at `section`.
    pub fn path_under(&self, section: &str) -> String {
        join(section, &self.field)
    }
}

/// `outer.inner`, leaving out whichever side is empty.
fn join(outer: &str, inner: &str) -> String {
    match (outer.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_owned(),
        (false, true) => outer.to_owned(),
        (false, false) => format!("{outer}.{inner}"),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}
