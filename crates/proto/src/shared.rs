//! [`SharedStr`]: a string a message shares with its sender, archived as a `String` is.
//!
//! The scheduler names an op and a key in a message for every task (the op of a compute
//! message, the key of a client's news), each a string it already holds as an
//! `Arc<str>`. As a `String`, each message made a copy to be encoded and freed at once:
//! an allocation and a copy a task. A `SharedStr` holds the sender's `Arc` and is written
//! from it; on the wire it is a string, read back as a new `Arc`.

use std::sync::Arc;

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::Writer;
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// A shared string on the wire: archived as a `String`. See the module's docs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SharedStr(pub Arc<str>);

impl std::ops::Deref for SharedStr {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(s.into())
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(s.into())
    }
}

impl From<Arc<str>> for SharedStr {
    fn from(s: Arc<str>) -> Self {
        SharedStr(s)
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        String::from(&*s.0)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl Archive for SharedStr {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(&self.0, resolver, out);
    }
}

impl<S> Serialize<S> for SharedStr
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(&self.0, serializer)
    }
}

/// The longest string [`LAST_READ`] keeps.
const REUSED_MAX: usize = 64;

thread_local! {
    /// The last short string this thread read: the op of every compute message of a
    /// map is the same, and is then shared instead of allocated again.
    static LAST_READ: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

impl<D: Fallible + ?Sized> Deserialize<SharedStr, D> for ArchivedString {
    fn deserialize(&self, _: &mut D) -> Result<SharedStr, D::Error> {
        let s = self.as_str();
        if s.len() > REUSED_MAX {
            return Ok(SharedStr(s.into()));
        }
        Ok(SharedStr(LAST_READ.with_borrow_mut(|last| match last {
            Some(l) if **l == *s => l.clone(),
            _ => last.insert(s.into()).clone(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written as a `String` is, byte for byte, and read back from those bytes.
    #[test]
    fn a_shared_string_is_archived_as_a_string() {
        for s in [
            "",
            "inc",
            "a key longer than the eight bytes kept inline",
            "ünï",
        ] {
            let shared = rkyv::to_bytes::<rkyv::rancor::Error>(&SharedStr::from(s)).unwrap();
            let owned = rkyv::to_bytes::<rkyv::rancor::Error>(&String::from(s)).unwrap();
            assert_eq!(shared.as_slice(), owned.as_slice(), "{s:?}");
            let back: SharedStr =
                rkyv::from_bytes::<SharedStr, rkyv::rancor::Error>(&owned).unwrap();
            assert_eq!(back, s);
            assert_eq!(format!("{back} {back:?}"), format!("{s} {s:?}"));
        }
    }

    /// Made from a `String`, an `Arc` or a `&str`, it reads as that text every way, and
    /// compares equal to it alone.
    #[test]
    fn a_shared_string_is_its_text() {
        use std::borrow::Borrow;
        for s in [
            SharedStr::from(String::from("key-1")),
            SharedStr::from(Arc::<str>::from("key-1")),
            SharedStr::from("key-1"),
        ] {
            assert_eq!(s.as_ref(), "key-1");
            let b: &str = s.borrow();
            assert_eq!(b, "key-1");
            assert_eq!(String::from(s.clone()), "key-1");
            assert!(s == *"key-1" && s == "key-1");
            assert!(s != *"key-2" && s != "key-2");
        }
    }

    /// A short string read twice in a row is shared; another in between, or a long one,
    /// is read as itself.
    #[test]
    fn a_short_string_read_again_is_shared() {
        let read = |s: &str| {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&String::from(s)).unwrap();
            rkyv::from_bytes::<SharedStr, rkyv::rancor::Error>(&bytes).unwrap()
        };
        let (a, b) = (read("inc"), read("inc"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(read("dec"), "dec");
        assert!(
            !Arc::ptr_eq(&a.0, &read("inc").0),
            "another string came between"
        );
        let longest = "y".repeat(REUSED_MAX);
        let (f, g) = (read(&longest), read(&longest));
        assert!(Arc::ptr_eq(&f.0, &g.0), "the longest string kept");
        let long = "x".repeat(REUSED_MAX + 1);
        let (d, e) = (read(&long), read(&long));
        assert_eq!((&*d, &*e), (long.as_str(), long.as_str()));
        assert!(!Arc::ptr_eq(&d.0, &e.0));
        assert_eq!(read("inc"), "inc");
    }
}
