//! A throwaway PostgreSQL server on the loopback interface, for the tests
//! and benchmarks of the PostgreSQL storage: `initdb` into a temporary
//! folder, `pg_ctl start` on a free port, one database, stopped on drop.
//!
//! The server binaries are Debian's `postgresql` package (found on `PATH` or
//! under `/usr/lib/postgresql/*/bin`). PostgreSQL refuses to run as root, so
//! as root the server runs as `nobody` through `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The server's superuser and its password (password authentication over
/// TCP, so a wrong one is refused as on a real server).
pub const USER: &str = "peftc";
pub const PASSWORD: &str = "peftc-test";

pub struct LocalPostgres {
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_root: bool,
    pub port: u16,
    /// `postgresql://peftc:PASSWORD@127.0.0.1:PORT/DB`
    pub url: String,
}

/// The folder holding `initdb` and `pg_ctl`, if the server is installed.
pub fn server_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    });
    on_path.or_else(|| {
        let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .collect();
        v.sort();
        v.pop()
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalPostgres {
    /// Starts a server with database `db`; `Err` says what is missing.
    pub fn start(tag: &str, db: &str) -> Result<LocalPostgres, String> {
        let bin = server_bin().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl); install Debian's `postgresql` package",
        )?;
        let dir = std::env::temp_dir().join(format!("peftc-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            run(Command::new("chown").arg("nobody").arg(&dir), false)?;
        }
        let data = dir.join("data");
        let pwfile = dir.join("password");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(|e| format!("{e}"))?;
        run(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .arg(format!("--pwfile={}", pwfile.display()))
                .args([
                    "-U",
                    USER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]),
            as_root,
        )?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let pg_ctl = bin.join("pg_ctl");
        run(
            Command::new(&pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
                    dir.display()
                ))
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "start"]),
            as_root,
        )?;
        let server = LocalPostgres {
            dir,
            pg_ctl,
            as_root,
            port,
            url: format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}"),
        };
        let mut c = postgres::Client::connect(
            &format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"),
            postgres::NoTls,
        )
        .map_err(|e| format!("cannot connect to the new server: {e}"))?;
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .map_err(|e| format!("CREATE DATABASE {db}: {e}"))?;
        Ok(server)
    }

    /// For a test: the server, or `None` (after saying why) when PostgreSQL
    /// is not installed — unless PEFTC_REQUIRE_POSTGRES is set, as in CI,
    /// where a missing server fails the test.
    pub fn for_test(tag: &str) -> Option<LocalPostgres> {
        match LocalPostgres::start(tag, "optuna") {
            Ok(s) => Some(s),
            Err(e) if std::env::var_os("PEFTC_REQUIRE_POSTGRES").is_some() => {
                panic!("PEFTC_REQUIRE_POSTGRES is set but: {e}")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = run(
            Command::new(&self.pg_ctl)
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
            self.as_root,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` (as `nobody` when `as_root`), its output in the error.
fn run(cmd: &mut Command, as_root: bool) -> Result<(), String> {
    let mut c = if as_root {
        let mut r = Command::new("runuser");
        r.args(["-u", "nobody", "--"]).arg(cmd.get_program());
        r.args(cmd.get_args());
        r
    } else {
        std::mem::replace(cmd, Command::new("true"))
    };
    let out = c
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}): {}{}",
            c.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
