//! The global allocator (mimalloc) and its one setting. Shared with the
//! benches through `#[path]`, so both measure the same allocator.

/// mimalloc keeps freed pages for reuse: training allocates and frees the same
/// activation-sized buffers every step, and the system allocator's fresh
/// `mmap`s cost 10% of a step in page faults.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h); the
/// -sys crate's named constants stop before it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed pages back to the OS. By default mimalloc v3 purges a
/// page 1 s after it is freed (options.c; mimalloc.h's comment still says 10 ms), so the vocabulary-sized logits of a causal LM
/// (100 MB at SmolLM2's batch 4 × 128) are faulted in and zeroed by the
/// kernel again every step: 5-15% of a SmolLM2 step (perf, `clear_page_erms`).
/// The peak resident set is unchanged: it is the step's own peak.
///
/// Call first thing in `main`, before other threads exist (mimalloc's option
/// setters are not thread safe).
pub fn keep_freed_pages() {
    // SAFETY: sets one integer option; called before any thread is spawned.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    /// The index names the purge delay: it reads v3's default of 1000 ms
    /// (options.c; unless the environment overrides it), and the neighbouring
    /// deprecated eager-commit delay reads its default of 1.
    #[test]
    fn purge_delay_index_reads_the_documented_default() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000);
        // SAFETY: reads one option.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY - 1) };
        assert_eq!(before, 1);
    }
}
