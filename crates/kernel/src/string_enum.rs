//! [`string_enum!`](crate::string_enum): a fieldless enum with one stable string form per variant
//! (storage, logs, the wire), `ALL`, `as_str`, `parse` and `Display`.

/// Declares a fieldless enum whose variants each have a stable string form.
///
/// ```
/// tuikuan_kernel::string_enum!(
///     /// A colour.
///     Colour {
///         Red => "RED",
///         Green => "GREEN",
///     }
/// );
/// assert_eq!(Colour::parse("RED"), Some(Colour::Red));
/// assert_eq!(Colour::Green.to_string(), "GREEN");
/// assert_eq!(Colour::ALL.len(), 2);
/// ```
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string form (storage, logs, the wire).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            /// Parses the stable string form.
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
