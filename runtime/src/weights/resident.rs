//! Copies of a host weight kept on devices (a GPU backend's upload of a
//! [`super::PackedMatrix`]), made once per device and freed with the weight.
//! Type-erased, so that this module needs no backend: each backend stores and
//! finds its own type under its device's name.

use std::any::Any;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Resident {
    copies: Mutex<Vec<(String, Arc<dyn Any + Send + Sync>)>>,
}

impl Resident {
    /// The copy stored for `device` as a `T`, made by `make` the first time.
    pub fn get_or_insert<T: Any + Send + Sync + Clone>(
        &self,
        device: &str,
        make: impl FnOnce() -> T,
    ) -> T {
        // A poisoned lock only means another upload panicked; the list is intact.
        let mut copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = copies
            .iter()
            .filter(|(d, _)| d == device)
            .find_map(|(_, c)| c.downcast_ref::<T>())
        {
            return t.clone();
        }
        let t = make();
        copies.push((device.to_string(), Arc::new(t.clone())));
        t
    }

    /// How many device copies exist.
    pub fn len(&self) -> usize {
        self.copies.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A clone is a new host weight: it has no device copies yet.
impl Clone for Resident {
    fn clone(&self) -> Resident {
        Resident::default()
    }
}

/// Device copies are a cache: they never make two weights differ.
impl PartialEq for Resident {
    fn eq(&self, _: &Resident) -> bool {
        true
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resident({} device copies)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_device_and_type() {
        let r = Resident::default();
        let mut made = 0;
        let a: u32 = r.get_or_insert("gpu0", || {
            made += 1;
            7
        });
        let b: u32 = r.get_or_insert("gpu0", || {
            made += 1;
            8
        });
        assert_eq!((a, b, made), (7, 7, 1));
        let c: u32 = r.get_or_insert("gpu1", || 9);
        assert_eq!((c, r.len()), (9, 2));
        assert!(r.clone().is_empty());
    }
}
