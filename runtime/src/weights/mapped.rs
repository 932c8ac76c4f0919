//! Checkpoint files read through a read-only memory map, their pages dropped
//! from the resident set once a tensor is converted.

use crate::error::{Result, RuntimeError};
use std::path::Path;

/// A read-only map of the file at `path`.
pub(super) fn open(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| RuntimeError::read(path, e))?;
    // SAFETY: the map is read-only and each reader drops it before returning;
    // a file changed underneath would at worst give wrong values, which the
    // shape and finiteness checks downstream report.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| RuntimeError::read(path, e))
}

/// Drops the pages of `bytes` (a tensor already converted) from the
/// process's resident set: the converted copy and the mapped file would
/// otherwise both count until the whole file is read.
pub(super) fn release(map: &memmap2::Mmap, bytes: &[u8]) {
    #[cfg(unix)]
    {
        let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
        // SAFETY: the mapping is a read-only shared file mapping: after
        // MADV_DONTNEED any access re-reads the same file bytes, so borrows
        // of it stay valid. Failure only leaves the pages resident.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
        };
    }
    #[cfg(not(unix))]
    let _ = (map, bytes);
}
