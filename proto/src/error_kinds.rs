//! `kind()` for the error enums: one macro for proto and for the bus
//! crate's errors (exported for it, hidden from the docs).

/// Defines `$kind`, a `Copy` enum with one variant per variant of the
/// error enum `$error`, and `$error::kind()`.
#[macro_export]
#[doc(hidden)]
macro_rules! error_kinds {
    ($(#[$meta:meta])* $error:ident => $kind:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $kind {
            $(
                #[doc = concat!("See [`", stringify!($error), "::", stringify!($variant), "`].")]
                $variant,
            )+
        }

        impl $error {
            /// Which kind of error this is, to branch on without matching
            /// fields.
            pub fn kind(&self) -> $kind {
                match self {
                    $($error::$variant { .. } => $kind::$variant,)+
                }
            }
        }
    };
}
pub(crate) use error_kinds;
