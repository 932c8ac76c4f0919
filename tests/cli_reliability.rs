//! Nothing lost, nothing silent: outputs that never destroy, limits checked
//! before work, loads that are complete or refused, non-finite training
//! stopped, monotone resume, `check` reading the data, bounded diagnostics.
//! One test per class; each failed on the build before these guarantees
//! (run them against another build with `PEFTC_BIN=path/to/peftc`).

mod common;
use common::*;
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Exit status 2 (the input's fault), no panic, and every needle in stderr.
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
    err
}

fn peftc_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run peftc")
}

/// 48 SMS messages of both classes.
fn sms(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(asset("sms/spam_collection.csv")).expect("sms");
    let (spam, ham): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| l.contains('\t'))
        .partition(|l| l.starts_with("spam"));
    let rows: Vec<&str> = (0..48)
        .map(|i| if i % 3 == 0 { spam[i] } else { ham[i] })
        .collect();
    write(dir, "sms.tsv", &(rows.join("\n") + "\n"))
}

/// A spec of one `statement` on the real MiniLM and `sms.tsv` (written
/// beside it); `train` holds `key = value` lines that replace the defaults.
fn spec(dir: &Path, name: &str, statement: &str, train: &str) -> PathBuf {
    sms(dir);
    let mut keys: Vec<(String, String)> = [
        ("adapter", "b"),
        ("task", "classify"),
        ("data", "\"sms.tsv\""),
        ("batch", "8"),
        ("seq_len", "32"),
        ("lr", "1e-3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for line in train.lines().filter(|l| l.contains('=')) {
        let (k, v) = line.split_once('=').expect("key = value");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match keys.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => keys.push((k, v)),
        }
    }
    let body: String = keys
        .iter()
        .map(|(k, v)| format!("    {k} = {v}\n"))
        .collect();
    write(
        dir,
        name,
        &format!(
            "model \"{}\"\npeft b {{\n    {statement}\n}}\ntrain {{\n{body}}}\n",
            asset("all-MiniLM-L6-v2").display()
        ),
    )
}

const QV: &str = "lora(r=4, alpha=8) on layers[*].attn.{q, v}";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A finished 2-step run of `spec` in `dir/name` (seeded by `seed`).
fn train(spec: &Path, run: &Path, seed: &str) {
    ok(&[
        "train",
        s(spec),
        "--out",
        s(run),
        "--max-steps",
        "2",
        "--seed",
        seed,
    ]);
}

/// Every file under `dir`, by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn outputs_never_destroy_what_was_there() {
    let d = temp_dir("outputs");
    let sp = spec(&d, "spec.peft", QV, "");
    let run = d.join("run");
    train(&sp, &run, "0");
    let mine = d.join("mine");
    std::fs::create_dir_all(mine.join("sub")).expect("mkdir");
    write(&mine.join("sub"), "keep.txt", "precious");
    let file = write(&d, "notes.txt", "a file of mine");
    let before = snapshot(&d);
    let run_before = snapshot(&run);

    for out in [s(&mine), ".", "..", "run", "notes.txt", "run/adapter"] {
        refused(
            &peftc_in(&d, &["merge", "run", "--out", out]),
            &["nothing was written"],
        );
        refused(
            &peftc_in(&d, &["export", "run", "--format", "hf", "--out", out]),
            &["nothing was written"],
        );
    }
    refused(
        &peftc(&["train", s(&sp), "--out", s(&mine), "--max-steps", "1"]),
        &["not empty", "--force"],
    );
    assert_eq!(snapshot(&d), before, "a refused command changed the folder");
    assert_eq!(snapshot(&run), run_before);
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        "a file of mine"
    );

    // --force writes beside the user's files, never over them.
    ok(&["merge", s(&run), "--out", s(&mine), "--force"]);
    assert_eq!(
        std::fs::read_to_string(mine.join("sub/keep.txt")).expect("kept"),
        "precious"
    );
    assert!(mine.join("model.safetensors").is_file());
    // The same command's output is replaced, the user's additions kept.
    write(&mine, "README.md", "my notes");
    ok(&["merge", s(&run), "--out", s(&mine)]);
    assert_eq!(
        std::fs::read_to_string(mine.join("README.md")).expect("kept"),
        "my notes"
    );
    // Another command's output is never written over, even with --force.
    refused(
        &peftc(&["export", s(&run), "--out", s(&mine), "--force"]),
        &["peftc merge"],
    );
    // A file of the user's with a name the output uses is never replaced.
    let clash = d.join("clash");
    std::fs::create_dir_all(&clash).expect("mkdir");
    write(&clash, "adapter_config.json", "{\"mine\": true}");
    refused(
        &peftc(&["export", s(&run), "--out", s(&clash), "--force"]),
        &["adapter_config.json", "never replaces"],
    );
    assert_eq!(
        std::fs::read_to_string(clash.join("adapter_config.json")).expect("kept"),
        "{\"mine\": true}"
    );
}

#[test]
fn killed_export_and_merge_leave_the_old_output_or_the_new() {
    let d = temp_dir("killed");
    let sp = spec(&d, "spec.peft", QV, "");
    let (a, b) = (d.join("a"), d.join("b"));
    train(&sp, &a, "0");
    train(&sp, &b, "1");
    for (cmd, extra) in [("export", vec!["--format", "hf"]), ("merge", vec![])] {
        let out = d.join(format!("{cmd}-out"));
        let run = |src: &Path| {
            let mut args = vec![cmd, s(src)];
            args.extend(&extra);
            args.extend(["--out", s(&out)]);
            args.iter().map(|x| x.to_string()).collect::<Vec<String>>()
        };
        ok(&run(&b).iter().map(String::as_str).collect::<Vec<_>>());
        let new = snapshot(&out);
        let _ = std::fs::remove_dir_all(&out);
        ok(&run(&a).iter().map(String::as_str).collect::<Vec<_>>());
        let old = snapshot(&out);
        assert_ne!(old, new, "the two runs must give different {cmd} outputs");
        // Every state in between: abort right after each file is written.
        for name in [
            ".peftc-output.json",
            "adapter_model.safetensors",
            "adapter_config.json",
            "model.safetensors",
            "config.json",
        ] {
            let o = Command::new(bin())
                .args(run(&b))
                .env("PEFTC_FAULT_AFTER_WRITE", name)
                .output()
                .expect("run");
            let now = snapshot(&out);
            assert!(
                now == old || now == new,
                "{cmd} aborted after writing {name} left a mixed folder: {:?}\n{}",
                now.keys().collect::<Vec<_>>(),
                stderr(&o)
            );
            if now == new {
                ok(&run(&a).iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        // And SIGKILL at times spread over the command.
        for ms in [30u64, 120, 250, 400, 600, 900] {
            let mut child = Command::new(bin())
                .args(run(&b))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill();
            let _ = child.wait();
            let now = snapshot(&out);
            assert!(
                now == old || now == new,
                "{cmd} killed after {ms} ms left a mixed folder: {:?}",
                now.keys().collect::<Vec<_>>()
            );
            if now == new {
                // Landed before the kill: start the next try from the old one.
                ok(&run(&a).iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        ok(&run(&b).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(snapshot(&out), new);
        let leftovers: Vec<String> = std::fs::read_dir(&d)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".peftc-"))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}

#[test]
fn limits_are_checked_before_work() {
    let d = temp_dir("limits");
    let long = spec(&d, "long.peft", QV, "    seq_len = 600\n");
    refused(
        &peftc(&["check", s(&long)]),
        &[
            "`seq_len = 600` exceeds the model's 512 positions",
            "long.peft:",
        ],
    );
    refused(
        &peftc(&["train", s(&long), "--out", s(&d.join("r1"))]),
        &["512 positions"],
    );
    let prompt = spec(&d, "prompt.peft", "prompt(len=500) on embed", "");
    refused(
        &peftc(&["check", s(&prompt)]),
        &["soft prompt of 500 tokens", "len="],
    );
    // A text longer than the position table is cut, not a crash.
    let short_prompt = spec(&d, "p.peft", "prompt(len=20) on embed", "");
    let text = "word ".repeat(900);
    ok(&["infer", s(&short_prompt), "--text", &text]);

    let sp = spec(&d, "spec.peft", QV, "");
    let run = s(&d.join("r2")).to_string();
    for flags in [
        vec!["train", s(&sp), "--out", &run, "--save-every", "0"],
        vec!["train", s(&sp), "--out", &run, "--max-steps", "0"],
        vec!["compile", s(&sp), "--batch", "0"],
        vec!["compile", s(&sp), "--seq", "0"],
        vec!["eval", s(&sp), "--batch", "0"],
        vec!["search", s(&sp), "--study", &run, "--trials", "0"],
        vec!["search", s(&sp), "--study", &run, "--workers", "0"],
    ] {
        refused(&peftc(&flags), &["at least 1"]);
    }
    refused(
        &peftc(&["compile", s(&sp), "--seq", "513"]),
        &["512 positions"],
    );

    // Estimates that do not fit 64 bits are an error naming the workload.
    let big = fixture_config("smollm2-135m");
    let llama = write(
        &d,
        "llama.peft",
        &format!(
            "model \"{}\"\npeft b {{ lora(r=8) on attn.q }}\n",
            big.display()
        ),
    );
    refused(
        &peftc(&[
            "compile",
            s(&llama),
            "--batch",
            "1048576",
            "--seq",
            "16777216",
        ]),
        &["does not fit in 64 bits", "batch 1048576"],
    );

    // A hidden size the heads do not divide.
    let bad = d.join("bad-heads");
    std::fs::create_dir_all(&bad).expect("mkdir");
    let cfg = std::fs::read_to_string(fixture_config("minilm-l6").join("config.json"))
        .expect("config")
        .replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7");
    assert!(cfg.contains("\"num_attention_heads\": 7"));
    write(&bad, "config.json", &cfg);
    refused(
        &peftc(&["check", s(&sp), "--model", s(&bad)]),
        &["not a multiple of num_attention_heads"],
    );

    // No Vulkan driver: an error saying what to install, not a panic.
    let out = Command::new(bin())
        .args(["infer", s(&sp), "--text", "hi", "--device", "wgpu"])
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .output()
        .expect("run");
    refused(&out, &["no GPU adapter", "mesa-vulkan-drivers"]);
}

/// Rewrites the safetensors file `path` with `edit` applied to its tensors
/// (name -> (dtype, shape, bytes)).
fn rewrite(
    path: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut t: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(k, (dt, shape, data))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).expect("view"),
            )
        })
        .collect();
    std::fs::write(
        path,
        safetensors::serialize(views, None).expect("serialize"),
    )
    .expect("write");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn adapters_load_complete_or_not_at_all() {
    let d = temp_dir("loads");
    let sp = spec(&d, "spec.peft", QV, "");
    let run = d.join("run");
    train(&sp, &run, "0");
    let infer = |adapter: &Path| peftc(&["infer", s(&sp), "--adapter", s(adapter), "--text", "hi"]);
    ok(&["infer", s(&sp), "--adapter", s(&run), "--text", "hi"]);
    let native = |tag: &str, edit: &dyn Fn(&mut BTreeMap<_, _>)| {
        let dir = d.join(tag);
        copy_dir(&run.join("adapter"), &dir);
        rewrite(&dir.join("adapter.safetensors"), |t| edit(t));
        dir
    };
    let half = native("half", &|t| {
        let keys: Vec<String> = t
            .keys()
            .filter(|k| k.contains("layer.3"))
            .cloned()
            .collect();
        for k in keys {
            t.remove(&k);
        }
    });
    refused(&infer(&half), &["lacks 4 of the", "layer.3"]);
    let empty = native("empty", &|t| t.clear());
    refused(&infer(&empty), &["lacks"]);
    let ints = native("ints", &|t| {
        let k = t
            .keys()
            .find(|k| k.contains("lora_A"))
            .cloned()
            .expect("a lora_A");
        let (_, shape, data) = t[&k].clone();
        t.insert(k, (safetensors::Dtype::I32, shape, data));
    });
    refused(&infer(&ints), &["has dtype I32"]);
    let nan = native("nan", &|t| {
        let k = t
            .keys()
            .find(|k| k.contains("lora_B"))
            .cloned()
            .expect("a lora_B");
        let e = t.get_mut(&k).expect("tensor");
        e.2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    refused(&infer(&nan), &["non-finite"]);
    // A q,v adapter for a q,k,v spec.
    let qkv = spec(
        &d,
        "qkv.peft",
        "lora(r=4, alpha=8) on layers[*].attn.{q, k, v}",
        "",
    );
    refused(
        &peftc(&["infer", s(&qkv), "--adapter", s(&run), "--text", "hi"]),
        &["lacks", "key"],
    );

    // Hugging Face adapter_config.json fields against the spec.
    let hf = d.join("hf");
    ok(&["export", s(&run), "--format", "hf", "--out", s(&hf)]);
    ok(&["infer", s(&sp), "--adapter", s(&hf), "--text", "hi"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("adapter_config.json")).expect("config"))
            .expect("json");
    let edited = |tag: &str, key: &str, value: serde_json::Value| {
        let dir = d.join(tag);
        copy_dir(&hf, &dir);
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(dir.join("adapter_config.json"), c.to_string()).expect("write");
        dir
    };
    refused(&infer(&edited("hf-r", "r", 16.into())), &["rank 16", "r=4"]);
    refused(
        &infer(&edited(
            "hf-targets",
            "target_modules",
            serde_json::json!(["query"]),
        )),
        &["target_modules", "leaving out", "value"],
    );
    refused(
        &infer(&edited(
            "hf-more",
            "target_modules",
            serde_json::json!(["query", "key", "value"]),
        )),
        &["target_modules", "key", "does not"],
    );
    refused(
        &infer(&edited(
            "hf-pattern",
            "rank_pattern",
            serde_json::json!({"output.dense": 2}),
        )),
        &["rank_pattern", "output.dense"],
    );
}

#[test]
fn non_finite_training_stops_or_skips() {
    let d = temp_dir("nonfinite");
    let sp = spec(&d, "spec.peft", QV, "    lr = 1e30\n");
    let run = d.join("run");
    refused(
        &peftc(&["train", s(&sp), "--out", s(&run), "--max-steps", "3"]),
        &["at step", "--skip-nonfinite"],
    );
    assert!(
        !run.join("adapter").exists(),
        "no adapter from a diverged run"
    );
    let skip = d.join("skip");
    let out = ok(&[
        "train",
        s(&sp),
        "--out",
        s(&skip),
        "--max-steps",
        "3",
        "--skip-nonfinite",
    ]);
    assert!(out.contains("trained 3 steps"), "{out}");
    let metrics = std::fs::read_to_string(skip.join("metrics.jsonl")).expect("metrics");
    assert!(metrics.contains("\"skipped\""), "{metrics}");
    // The first update left huge but finite values; their logits are not
    // finite, and infer says so instead of printing `null`.
    refused(
        &peftc(&[
            "infer",
            s(&sp),
            "--adapter",
            s(&skip),
            "--text",
            "hi",
            "--json",
        ]),
        &["non-finite logit"],
    );
}

#[test]
fn resume_is_monotone() {
    let d = temp_dir("resume");
    let sp = spec(&d, "spec.peft", QV, "");
    let run = d.join("run");
    ok(&[
        "train",
        s(&sp),
        "--out",
        s(&run),
        "--max-steps",
        "4",
        "--save-every",
        "2",
    ]);
    let latest = run.join("checkpoints/latest");
    let before = snapshot(&run.join("checkpoints"));
    refused(
        &peftc(&[
            "train",
            s(&sp),
            "--out",
            s(&run),
            "--max-steps",
            "2",
            "--resume",
        ]),
        &["already at step 4", "nothing was changed"],
    );
    assert_eq!(snapshot(&run.join("checkpoints")), before);
    let again = ok(&[
        "train",
        s(&sp),
        "--out",
        s(&run),
        "--max-steps",
        "4",
        "--resume",
    ]);
    assert!(again.contains("already trained 4 steps"), "{again}");
    assert_eq!(snapshot(&run.join("checkpoints")), before);
    std::fs::remove_file(&latest).expect("rm latest");
    refused(
        &peftc(&[
            "train",
            s(&sp),
            "--out",
            s(&run),
            "--max-steps",
            "6",
            "--resume",
        ]),
        &["no `latest` pointer", "step-0000004"],
    );
    // --force starts over, removing only the run's own files.
    write(&run, "mine.txt", "kept");
    ok(&[
        "train",
        s(&sp),
        "--out",
        s(&run),
        "--max-steps",
        "1",
        "--force",
    ]);
    assert_eq!(
        std::fs::read_to_string(run.join("mine.txt")).expect("kept"),
        "kept"
    );
}

#[test]
fn check_reads_the_data_it_names() {
    let d = temp_dir("data");
    let sp = spec(&d, "spec.peft", QV, "");
    ok(&["check", s(&sp)]);
    let with_data = |name: &str, data: &[u8]| {
        std::fs::write(d.join(name), data).expect("write");
        let text = std::fs::read_to_string(&sp)
            .expect("spec")
            .replace("sms.tsv", name);
        write(&d, &format!("{name}.peft"), &text)
    };
    let missing = std::fs::read_to_string(&sp)
        .expect("spec")
        .replace("sms.tsv", "nope.tsv");
    let missing = write(&d, "missing.peft", &missing);
    refused(
        &peftc(&["check", s(&missing)]),
        &["nope.tsv", "no such file", "missing.peft:"],
    );
    // compile estimates without the data: a warning.
    let out = peftc(&["compile", s(&missing)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    refused(
        &peftc(&[
            "check",
            s(&with_data("tab.tsv", b"ham\thi\nspam\twin\nno tab\n")),
        ]),
        &["tab.tsv`:3", "no tab"],
    );
    refused(
        &peftc(&["check", s(&with_data("one.tsv", b"ham\thi\nham\tthere\n"))]),
        &["at least 2 classes"],
    );
    let latin1 = with_data("latin1.tsv", b"ham\tcaf\xe9\nspam\twin\n");
    let out = peftc(&["check", s(&latin1)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("latin1.tsv`:1: bytes that are not UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn diagnostics_of_long_and_binary_lines_are_bounded() {
    let d = temp_dir("diag");
    let mut text = format!(
        "model \"{}\"\npeft b {{\n    ",
        fixture_config("minilm-l6").display()
    );
    text.push_str(&"x".repeat(1 << 20));
    text.push_str("\0(r=8) on attn.q\n}\n");
    let p = write(&d, "huge.peft", &text);
    let out = peftc(&["check", s(&p)]);
    let err = refused(&out, &["huge.peft:3:"]);
    assert!(err.len() < 4096, "{} bytes of diagnostic", err.len());
    assert!(!err.contains('\0'), "a raw NUL in the diagnostic");
}

#[test]
fn errors_name_what_went_wrong() {
    let d = temp_dir("errors");
    let sp = spec(&d, "spec.peft", QV, "");
    let run = d.join("run");
    train(&sp, &run, "0");
    let file = write(&d, "f", "x");
    refused(
        &peftc(&["merge", s(&run), "--out", s(&file.join("sub"))]),
        &["cannot", "Not a directory"],
    );
}
