//! The panic boundary: a panic anywhere under a command (peftc's own code,
//! burn, cubecl, a GPU driver's worker thread) ends the command with an
//! internal error, exit 1, instead of a crash and a backtrace.

use super::CliError;
use std::sync::Mutex;

/// The first panic's message and place, recorded by the hook.
static FIRST: Mutex<Option<String>> = Mutex::new(None);

/// Runs `f`, turning a panic on this thread, or one recorded on any other
/// thread while it ran, into [`CliError::Internal`].
pub fn contain<T>(f: impl FnOnce() -> Result<T, CliError>) -> Result<T, CliError> {
    let verbose = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        if let Ok(mut first) = FIRST.lock()
            && first.is_none()
        {
            *first = Some(format!("{what}{place}"));
        }
        if verbose {
            default_hook(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let recorded = FIRST.lock().ok().and_then(|mut g| g.take());
    match outcome {
        Ok(Ok(v)) => Ok(v),
        // A backend thread panicked and the command failed because of it:
        // the panic is the cause worth reporting.
        Ok(Err(e)) => {
            if let Some(p) = recorded {
                eprintln!("note: a thread of peftc or its backend panicked: {p}");
            }
            Err(e)
        }
        Err(_) => Err(CliError::Internal(
            recorded.unwrap_or_else(|| "a panic without a message".into()),
        )),
    }
}
