//! Layering: `upstream_defaults` laid under each deployment's own sections.
//!
//! A layered section is declared once with [`section!`]: a serde struct whose fields are all
//! optional (`Option<T>`, or a nested section), with `deny_unknown_fields`, and an [`Overlay`]
//! impl that takes each field the section leaves unset from the base, field by field. The
//! validation into the typed settings (`TryFrom<Raw…>`) then sees one merged section and applies
//! the defaults, so "own, else `upstream_defaults`, else the built-in default" is written nowhere
//! by hand.

use super::FieldError;

/// A section as written, which can be laid over a base section.
pub(crate) trait Overlay {
    /// `self`, with every field it leaves unset taken from `base`.
    #[must_use]
    fn over(self, base: &Self) -> Self;
}

/// A single setting: the section's own value if it has one, else the base's.
impl<T: Clone> Overlay for Option<T> {
    fn over(self, base: &Self) -> Self {
        self.or_else(|| base.clone())
    }
}

/// A section that can be switched off (a disabled breaker, no health checks, no limits): it
/// builds `None` when off and its validated settings otherwise.
pub(crate) trait Switch: Sized {
    /// The validated settings.
    type Config: TryFrom<Self, Error = FieldError>;

    /// Whether the section asks for its feature at all.
    fn is_on(&self) -> bool;

    /// `None` when off; otherwise the validated settings (validation only runs when on, so the
    /// settings of a disabled feature are never reported).
    fn build(self) -> Result<Option<Self::Config>, FieldError> {
        if self.is_on() {
            Self::Config::try_from(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Declares a layered config section: the struct (`Debug`, `Default`, `Clone`, `Deserialize` with
/// `deny_unknown_fields`) and its [`Overlay`] impl, field by field. Every field's type must itself
/// be an `Overlay` (an `Option`, or another section), which keeps the sections all-optional.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $ty, )*
        }

        impl $crate::config::overlay::Overlay for $name {
            fn over(self, base: &Self) -> Self {
                $name {
                    $( $field: $crate::config::overlay::Overlay::over(self.$field, &base.$field), )*
                }
            }
        }
    };
}

pub(crate) use section;

#[cfg(test)]
mod tests {
    use super::Overlay;

    section! {
        struct Inner {
            a: Option<u32>,
            b: Option<String>,
        }
    }

    section! {
        struct Outer {
            x: Option<u32>,
            #[serde(default)]
            inner: Inner,
        }
    }

    #[test]
    fn own_values_win_and_gaps_are_filled_from_the_base_field_by_field() {
        let own = Outer {
            x: None,
            inner: Inner { a: Some(1), b: None },
        };
        let base = Outer {
            x: Some(7),
            inner: Inner {
                a: Some(2),
                b: Some("base".to_owned()),
            },
        };
        let merged = own.over(&base);
        assert_eq!(merged.x, Some(7));
        assert_eq!(merged.inner.a, Some(1));
        assert_eq!(merged.inner.b.as_deref(), Some("base"));
        assert_eq!(Outer::default().over(&Outer::default()).x, None);
    }

    #[test]
    fn sections_reject_unknown_keys() {
        let err = serde_saphyr::from_str::<Outer>("x: 1\ny: 2\n").err();
        assert!(err.is_some_and(|e| e.to_string().contains('y')));
    }
}
