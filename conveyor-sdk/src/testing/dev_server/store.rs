//! One store for what the server keeps by name (resources, resource definitions and
//! pipelines), with every version of each.
//!
//! Each kind of thing says how it is named and what a new version of it carries over
//! ([`Stored`]); the store does the rest, the same way for all three.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A thing the [`Store`] keeps.
pub(super) trait Stored: Clone {
    /// What names one: a resource's type and name, a definition's or a pipeline's name.
    type Key: Ord + Clone;

    /// What the API calls one in its error texts (`resource definition`).
    const KIND: &'static str;

    /// Its key.
    fn key(&self) -> Self::Key;

    /// The key as the API's error texts show it.
    fn show(key: &Self::Key) -> String;

    /// Readies a version before it is kept: `number` counts from 1 and `previous` is
    /// the version it follows (none for the first version). Nothing by default.
    fn stamp(&mut self, number: u64, previous: Option<&Self>) {
        let _ = (number, previous);
    }
}

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum StoreError {
    /// Nothing of that name is kept.
    #[error("{kind} {key} not found")]
    NotFound {
        /// What was asked for.
        kind: &'static str,
        /// Its name.
        key: String,
    },
    /// The name is kept, but no version of that number (or the name is not kept).
    #[error("{kind} {key} version {version} not found")]
    NoSuchVersion {
        /// What was asked for.
        kind: &'static str,
        /// Its name.
        key: String,
        /// The version asked for.
        version: String,
    },
    /// Something of that name is kept already.
    #[error("{kind} {key} already exists")]
    Taken {
        /// What was to be created.
        kind: &'static str,
        /// Its name.
        key: String,
    },
    /// The name is kept, but in a state that refuses the change; the reason says why.
    #[error("{kind} {key} {reason}")]
    Conflict {
        /// What was to be changed.
        kind: &'static str,
        /// Its name.
        key: String,
        /// Why not, e.g. `is being deleted`.
        reason: String,
    },
    /// A thread panicked while it held the server's state.
    #[error("state poisoned")]
    Poisoned,
}

impl StoreError {
    fn not_found<T: Stored>(key: &T::Key) -> Self {
        Self::NotFound { kind: T::KIND, key: T::show(key) }
    }
}

/// Named things of one kind, each with the list of its versions, oldest first.
pub(super) struct Store<T: Stored> {
    things: RwLock<Things<T>>,
}

/// Every version of every name, by name.
type Things<T> = BTreeMap<<T as Stored>::Key, Vec<T>>;

impl<T: Stored> Default for Store<T> {
    fn default() -> Self {
        Self { things: RwLock::default() }
    }
}

impl<T: Stored> Store<T> {
    /// Keeps `thing` as the first version of a new name; a name kept already is refused.
    pub(super) fn create(&self, thing: T) -> Result<T, StoreError> {
        let key = thing.key();
        let mut things = self.write()?;
        if things.contains_key(&key) {
            return Err(StoreError::Taken { kind: T::KIND, key: T::show(&key) });
        }
        Ok(first(&mut things, key, thing))
    }

    /// Keeps `thing` as the first version of its name, forgetting any earlier ones.
    pub(super) fn recreate(&self, thing: T) -> Result<T, StoreError> {
        let key = thing.key();
        Ok(first(&mut *self.write()?, key, thing))
    }

    /// Keeps `thing` as the next version of its name, or as the first of a new name.
    pub(super) fn apply(&self, thing: T) -> Result<T, StoreError> {
        let key = thing.key();
        let mut things = self.write()?;
        match things.get_mut(&key) {
            Some(versions) => Ok(next(versions, thing)),
            None => Ok(first(&mut things, key, thing)),
        }
    }

    /// Keeps `thing` as the next version of a name kept already.
    pub(super) fn update(&self, thing: T) -> Result<T, StoreError> {
        self.update_if(thing, |_| Ok(()))
    }

    /// [`update`](Self::update), if `allowed` accepts the latest version; it looks
    /// under the same lock, so nothing changes the name in between.
    pub(super) fn update_if(
        &self,
        thing: T,
        allowed: impl FnOnce(&T) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let key = thing.key();
        let mut things = self.write()?;
        let versions = things.get_mut(&key).ok_or_else(|| StoreError::not_found::<T>(&key))?;
        if let Some(latest) = versions.last() {
            allowed(latest)?;
        }
        Ok(next(versions, thing))
    }

    /// The latest version, if the name is kept.
    pub(super) fn find(&self, key: &T::Key) -> Result<Option<T>, StoreError> {
        Ok(self.read()?.get(key).and_then(|versions| versions.last().cloned()))
    }

    /// The latest version.
    pub(super) fn get(&self, key: &T::Key) -> Result<T, StoreError> {
        self.find(key)?.ok_or_else(|| StoreError::not_found::<T>(key))
    }

    /// The version numbered `version`, written as the API writes numbers (`2`, not `02`).
    pub(super) fn version(&self, key: &T::Key, version: &str) -> Result<T, StoreError> {
        let things = self.read()?;
        let versions = things.get(key).map(Vec::as_slice).unwrap_or_default();
        versions
            .iter()
            .zip(1u64..)
            .find(|(_, number)| number.to_string() == version)
            .map(|(t, _)| t.clone())
            .ok_or_else(|| StoreError::NoSuchVersion {
                kind: T::KIND,
                key: T::show(key),
                version: version.to_owned(),
            })
    }

    /// Changes the latest version in place, under the number it has.
    pub(super) fn change_latest(&self, key: &T::Key, change: impl FnOnce(&mut T)) -> Result<T, StoreError> {
        let mut things = self.write()?;
        let latest =
            things.get_mut(key).and_then(|v| v.last_mut()).ok_or_else(|| StoreError::not_found::<T>(key))?;
        change(latest);
        Ok(latest.clone())
    }

    /// Settles the latest version of a name under the store's lock: `decide` may change
    /// it in place and answers whether the name stays (`false` forgets it and every
    /// version) and what else it decided. `None` when the name is not kept.
    pub(super) fn settle<R>(
        &self,
        key: &T::Key,
        decide: impl FnOnce(&mut T) -> (bool, R),
    ) -> Result<Option<R>, StoreError> {
        let mut things = self.write()?;
        let Some(latest) = things.get_mut(key).and_then(|v| v.last_mut()) else {
            return Ok(None);
        };
        let (keep, decided) = decide(latest);
        if !keep {
            things.remove(key);
        }
        Ok(Some(decided))
    }

    /// The latest version of every name whose key `wanted` accepts, in key order.
    pub(super) fn list(&self, wanted: impl Fn(&T::Key) -> bool) -> Result<Vec<T>, StoreError> {
        let things = self.read()?;
        Ok(things.iter().filter(|(key, _)| wanted(key)).filter_map(|(_, v)| v.last().cloned()).collect())
    }

    /// Forgets a name and every version of it; returns the latest version.
    pub(super) fn delete(&self, key: &T::Key) -> Result<T, StoreError> {
        self.write()?.remove(key).and_then(|mut v| v.pop()).ok_or_else(|| StoreError::not_found::<T>(key))
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Things<T>>, StoreError> {
        self.things.read().map_err(|_| StoreError::Poisoned)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Things<T>>, StoreError> {
        self.things.write().map_err(|_| StoreError::Poisoned)
    }
}

/// Keeps `thing` as version 1 of `key`, in place of whatever was kept under it.
fn first<T: Stored>(things: &mut Things<T>, key: T::Key, mut thing: T) -> T {
    thing.stamp(1, None);
    things.insert(key, vec![thing.clone()]);
    thing
}

/// Keeps `thing` as the version after the last of `versions`.
fn next<T: Stored>(versions: &mut Vec<T>, mut thing: T) -> T {
    let number = versions.len() as u64 + 1;
    thing.stamp(number, versions.last());
    versions.push(thing.clone());
    thing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thing that keeps its number, and its id from one version to the next.
    #[derive(Clone, Debug, PartialEq)]
    struct Note {
        name: String,
        text: String,
        id: String,
        number: u64,
    }

    fn note(name: &str, text: &str) -> Note {
        Note { name: name.into(), text: text.into(), id: format!("id of {text}"), number: 0 }
    }

    impl Stored for Note {
        type Key = String;
        const KIND: &'static str = "note";

        fn key(&self) -> String {
            self.name.clone()
        }

        fn show(key: &String) -> String {
            format!("{key:?}")
        }

        fn stamp(&mut self, number: u64, previous: Option<&Self>) {
            self.number = number;
            if let Some(previous) = previous {
                self.id = previous.id.clone();
            }
        }
    }

    fn texts(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.text.as_str()).collect()
    }

    #[test]
    fn a_new_name_is_created_as_version_1_and_a_taken_one_is_refused() {
        let store = Store::default();
        assert_eq!(store.create(note("a", "first")).unwrap().number, 1);
        let refused = store.create(note("a", "second")).unwrap_err();
        assert!(matches!(refused, StoreError::Taken { kind: "note", .. }), "{refused:?}");
        assert_eq!(store.get(&"a".into()).unwrap().text, "first");
    }

    #[test]
    fn each_update_adds_a_version_and_every_version_stays_readable() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        let second = store.update(note("a", "two")).unwrap();
        assert_eq!((second.number, second.id.as_str()), (2, "id of one"), "the kind's carry-over applies");
        store.update(note("a", "three")).unwrap();
        let key = "a".to_owned();
        assert_eq!(store.get(&key).unwrap().text, "three");
        let versions: Vec<Note> = ["1", "2", "3"].iter().map(|v| store.version(&key, v).unwrap()).collect();
        assert_eq!(texts(&versions), ["one", "two", "three"]);
        assert_eq!(versions.iter().map(|n| n.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn updating_a_name_not_kept_is_not_found_and_keeps_nothing() {
        let store = Store::<Note>::default();
        assert!(matches!(store.update(note("a", "one")), Err(StoreError::NotFound { .. })));
        assert_eq!(store.find(&"a".into()).unwrap(), None);
    }

    #[test]
    fn recreating_forgets_every_earlier_version() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        store.update(note("a", "two")).unwrap();
        let again = store.recreate(note("a", "anew")).unwrap();
        assert_eq!((again.number, again.id.as_str()), (1, "id of anew"), "nothing is carried over");
        let key = "a".to_owned();
        assert_eq!(store.version(&key, "1").unwrap().text, "anew");
        assert!(matches!(store.version(&key, "2"), Err(StoreError::NoSuchVersion { .. })));
    }

    #[test]
    fn applying_creates_a_new_name_and_adds_a_version_to_a_kept_one() {
        let store = Store::default();
        assert_eq!(store.apply(note("a", "one")).unwrap().number, 1);
        let applied = store.apply(note("a", "two")).unwrap();
        assert_eq!((applied.number, applied.id.as_str()), (2, "id of one"));
        assert_eq!(store.get(&"a".into()).unwrap().text, "two");
    }

    #[test]
    fn a_version_is_found_only_by_its_number_as_the_api_writes_it() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        let key = "a".to_owned();
        assert_eq!(store.version(&key, "1").unwrap().text, "one");
        for wrong in ["01", "0", "2", " 1", "one"] {
            assert!(matches!(store.version(&key, wrong), Err(StoreError::NoSuchVersion { .. })), "{wrong}");
        }
        let missing = store.version(&"b".into(), "1").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "note \"b\" version 1 not found",
            "a missing name is a missing version"
        );
    }

    #[test]
    fn changing_the_latest_version_keeps_its_number_and_the_earlier_versions() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        store.update(note("a", "two")).unwrap();
        let key = "a".to_owned();
        let changed = store.change_latest(&key, |n| n.text.push_str(" and more")).unwrap();
        assert_eq!((changed.number, changed.text.as_str()), (2, "two and more"));
        assert_eq!(store.version(&key, "2").unwrap(), changed);
        assert_eq!(store.version(&key, "1").unwrap().text, "one");
        assert!(matches!(store.change_latest(&"b".into(), |_| {}), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn an_update_the_latest_version_refuses_keeps_nothing() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        let refuse = |latest: &Note| {
            Err(StoreError::Conflict { kind: "note", key: latest.name.clone(), reason: "is busy".into() })
        };
        let refused = store.update_if(note("a", "two"), refuse).unwrap_err();
        assert_eq!(refused.to_string(), "note a is busy");
        assert!(matches!(store.version(&"a".into(), "2"), Err(StoreError::NoSuchVersion { .. })));
        let accepted = store.update_if(note("a", "two"), |latest| {
            assert_eq!(latest.text, "one", "the check sees the latest version");
            Ok(())
        });
        assert_eq!(accepted.unwrap().number, 2);
    }

    #[test]
    fn settling_changes_the_latest_version_in_place_or_forgets_the_name() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        store.update(note("a", "two")).unwrap();
        let key = "a".to_owned();
        let kept = store.settle(&key, |n| {
            n.text.push_str(" settled");
            (true, n.number)
        });
        assert_eq!(kept.unwrap(), Some(2), "the latest version is the one settled");
        assert_eq!(store.version(&key, "2").unwrap().text, "two settled");
        assert_eq!(store.version(&key, "1").unwrap().text, "one");
        assert_eq!(store.settle(&key, |_| (false, ())).unwrap(), Some(()));
        assert!(matches!(store.get(&key), Err(StoreError::NotFound { .. })), "every version is gone");
        assert_eq!(store.settle(&key, |_| (true, ())).unwrap(), None, "nothing to settle");
    }

    #[test]
    fn lists_hold_the_latest_version_of_each_wanted_name_in_key_order() {
        let store = Store::default();
        for (name, text) in [("c", "c1"), ("a", "a1"), ("b", "b1")] {
            store.create(note(name, text)).unwrap();
        }
        store.update(note("a", "a2")).unwrap();
        assert_eq!(texts(&store.list(|_| true).unwrap()), ["a2", "b1", "c1"]);
        assert_eq!(texts(&store.list(|key| key != "b").unwrap()), ["a2", "c1"]);
        assert!(store.list(|_| false).unwrap().is_empty());
    }

    #[test]
    fn deleting_forgets_every_version_and_a_second_delete_is_not_found() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        store.update(note("a", "two")).unwrap();
        let key = "a".to_owned();
        assert_eq!(store.delete(&key).unwrap().text, "two", "the latest version is returned");
        assert!(matches!(store.get(&key), Err(StoreError::NotFound { .. })));
        assert!(matches!(store.version(&key, "1"), Err(StoreError::NoSuchVersion { .. })));
        assert!(matches!(store.delete(&key), Err(StoreError::NotFound { .. })));
        assert_eq!(store.create(note("a", "again")).unwrap().number, 1, "the name is free again");
    }

    #[test]
    fn error_texts_name_the_kind_and_the_key_as_the_api_answers() {
        let store = Store::default();
        store.create(note("a", "one")).unwrap();
        let texts = [
            store.create(note("a", "two")).unwrap_err().to_string(),
            store.get(&"b".into()).unwrap_err().to_string(),
            store.version(&"a".into(), "7").unwrap_err().to_string(),
        ];
        assert_eq!(
            texts,
            ["note \"a\" already exists", "note \"b\" not found", "note \"a\" version 7 not found"]
        );
    }
}
