//! Sparse masks end to end on the real MiniLM: each selection rule and
//! structure trains, merges into a checkpoint whose weights differ from the
//! base at exactly the selected positions (by exactly the trained values),
//! and `infer --merged` gives the unmerged logits; the adapter file is
//! sparse, and damaged position tensors are refused.

mod common;
use common::*;
use peftc_runtime::weights::{
    HostTensor, read_safetensors, read_safetensors_all_float, write_safetensors,
};
use std::collections::BTreeMap;
use std::path::Path;

const TEXTS: &[&str] = &[
    "WIN a free prize now, call 0800",
    "see you at lunch tomorrow",
];

fn merged_logits(sp: &Path, run: &Path) -> Vec<Vec<f64>> {
    let (sp, run) = (sp.display().to_string(), run.display().to_string());
    json_logits(&["infer", &sp, "--merged", "--adapter", &run], TEXTS)
}

/// The `[out, in]` entries a mask's index selects, flat.
fn selected(structure: &str, index: &HostTensor, out_f: usize, in_f: usize) -> Vec<usize> {
    let at: Vec<usize> = index.data.iter().map(|&v| v as usize).collect();
    match structure {
        "element" => at.chunks_exact(2).map(|p| p[0] * in_f + p[1]).collect(),
        "row" => at
            .iter()
            .flat_map(|&r| (0..in_f).map(move |c| r * in_f + c))
            .collect(),
        _ => (0..out_f)
            .flat_map(|r| at.iter().map(move |&c| r * in_f + c))
            .collect(),
    }
}

#[test]
fn every_mask_trains_merges_exactly_its_entries_and_keeps_the_logits() {
    let cases = [
        // (name, statement, structure, module, out, in, expected count)
        (
            "magnitude",
            "mask(density=0.002, by=magnitude) on layers[*].mlp.{up, down}",
            "element",
            "encoder.layer.0.intermediate.dense",
            1536,
            384,
            1180, // round(0.002 · 589,824)
        ),
        (
            "random-rows",
            "mask(density=0.05, structure=row, by=random) on layers[*].attn.q",
            "row",
            "encoder.layer.0.attention.self.query",
            384,
            384,
            19,
        ),
        (
            "columns",
            "mask(density=0.05, structure=column) on layers[*].attn.v",
            "column",
            "encoder.layer.0.attention.self.value",
            384,
            384,
            19,
        ),
        (
            "lt_sft",
            "mask(density=0.001, by=lt_sft, warmup_steps=1) on layers[*].attn.{q, v}",
            "element",
            "encoder.layer.0.attention.self.query",
            384,
            384,
            147,
        ),
        (
            "diff_pruning",
            "mask(density=0.05, structure=row, by=diff_pruning, warmup_steps=1) on layers[*].mlp.down",
            "row",
            "encoder.layer.3.output.dense",
            384,
            1536,
            19,
        ),
        (
            "fisher",
            "mask(density=0.001, by=fisher, calib=2) on layers[*].attn.{q, v}",
            "element",
            "encoder.layer.0.attention.self.value",
            384,
            384,
            147, // round(0.001 · 147,456)
        ),
    ];
    let d = temp_dir("masks");
    let base =
        read_safetensors(&asset("all-MiniLM-L6-v2/model.safetensors")).expect("base weights");
    for (name, statement, structure, module, out_f, in_f, count) in cases {
        let sp = minilm_spec(&d, &format!("{name}.peft"), statement, "");
        let run = d.join(format!("{name}-run"));
        let merged = d.join(format!("{name}-merged"));
        let s = |p: &Path| p.display().to_string();
        ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
        ok(&["merge", &s(&run), "--out", &s(&merged)]);

        let adapter =
            read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter");
        let values = &adapter[&format!("{module}.mask_values")];
        let index = &adapter[&format!("{module}.mask_index")];
        let chosen = selected(structure, index, out_f, in_f);
        let per_unit = match structure {
            "element" => 1,
            "row" => in_f,
            _ => out_f,
        };
        assert_eq!(chosen.len(), count * per_unit, "{name}: trained entries");
        assert_eq!(values.data.len(), chosen.len(), "{name}: sparse values");

        let w = format!("{module}.weight");
        let after = read_safetensors(&merged.join("model.safetensors")).expect("merged");
        // The merged checkpoint is a sequence classifier: `bert.` prefixes
        // the base model's names.
        let (b, a) = (&base[&w], &after[&format!("bert.{w}")]);
        // Values in the order of `chosen`: entries and rows are row-major;
        // columns are stored `[out, k]`, also row-major over `chosen`.
        let mut want = b.data.clone();
        for (&e, &v) in chosen.iter().zip(&values.data) {
            want[e] += v;
        }
        let moved: Vec<usize> = (0..a.data.len())
            .filter(|&e| a.data[e] != b.data[e])
            .collect();
        assert!(
            moved.iter().all(|e| chosen.binary_search(e).is_ok()),
            "{name}: the merge changed an entry the mask did not select"
        );
        assert!(
            moved.len() * 10 >= chosen.len() * 9,
            "{name}: only {} of {} selected entries moved in two steps",
            moved.len(),
            chosen.len()
        );
        assert_eq!(a.data, want, "{name}: merged = base + values, exactly");

        let unmerged = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
        let untrained = infer_logits(&sp, &[], TEXTS, "cpu");
        assert!(
            max_diff(&unmerged, &untrained) > 1e-4,
            "{name}: training changed nothing"
        );
        let diff = max_diff(&unmerged, &merged_logits(&sp, &run));
        assert!(diff <= 1e-4, "{name}: merged logits {diff:e} off");
    }
}

/// FishMask chooses by the data's gradients: on the same weights it keeps
/// other entries than magnitude does, and the same ones on a second run.
#[test]
fn fisher_selection_depends_on_the_data_and_is_reproducible() {
    let d = temp_dir("masks-fisher");
    let index = |name: &str, statement: &str| {
        let sp = minilm_spec(&d, &format!("{name}.peft"), statement, "");
        let run = d.join(name);
        let (sp, run_s) = (sp.display().to_string(), run.display().to_string());
        ok(&["train", &sp, "--out", &run_s, "--max-steps", "1"]);
        read_safetensors_all_float(&run.join("adapter/adapter.safetensors")).expect("adapter")
            ["encoder.layer.2.attention.self.query.mask_index"]
            .data
            .clone()
    };
    let f1 = index(
        "f1",
        "mask(density=0.001, by=fisher, calib=3) on layers[*].attn.q",
    );
    let f2 = index(
        "f2",
        "mask(density=0.001, by=fisher, calib=3) on layers[*].attn.q",
    );
    let m = index("m", "mask(density=0.001, by=magnitude) on layers[*].attn.q");
    assert_eq!(f1, f2, "the calibration is deterministic");
    assert_ne!(f1, m, "fisher chose exactly magnitude's entries");
}

/// An adapter whose positions are out of range or out of order is refused
/// with the tensor's name (exit 2), never used.
#[test]
fn damaged_mask_positions_are_refused() {
    let d = temp_dir("masks-bad");
    let sp = minilm_spec(&d, "m.peft", "mask(density=0.001) on layers[*].attn.q", "");
    let run = d.join("run");
    let s = |p: &Path| p.display().to_string();
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "1"]);
    let file = run.join("adapter/adapter.safetensors");
    let good = read_safetensors_all_float(&file).expect("adapter");
    let name = "encoder.layer.1.attention.self.query.mask_index";
    type Damage = fn(&mut Vec<f32>);
    let damage: [(&str, Damage); 3] = [
        ("out of range", |v| v[1] = 384.0),
        ("unsorted", |v| v.swap(0, 2)),
        ("not whole", |v| v[0] += 0.5),
    ];
    // A valid index of its own, entry e at (e, 5), which the damage breaks
    // in one way each.
    let mut valid = good.clone();
    let idx = valid.get_mut(name).expect("index");
    let k = idx.data.len() / 2;
    idx.data = (0..k).flat_map(|e| [e as f32, 5.0]).collect();
    let infer = || peftc(&["infer", &s(&sp), "--adapter", &s(&run), "--text", "hello"]);
    write_safetensors(&file, &valid, None).expect("write");
    let out = infer();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (what, f) in damage {
        let mut t: BTreeMap<String, HostTensor> = valid.clone();
        f(&mut t.get_mut(name).expect("index").data);
        write_safetensors(&file, &t, None).expect("write");
        let out = infer();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(name),
            "{what}: the error names the tensor: {err}"
        );
    }
}

/// A row mask whose density rounds to no row, and a fisher calibration
/// longer than the data, are refused before any work.
#[test]
fn masks_that_would_train_nothing_are_refused() {
    let d = temp_dir("masks-refused");
    let sp = minilm_spec(
        &d,
        "rows.peft",
        "mask(density=0.001, structure=row) on layers[*].attn.q",
        "",
    );
    let out = peftc(&["check", &sp.display().to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("selects no row") && err.contains("rows.peft:3:"),
        "{err}"
    );

    let sp = minilm_spec(
        &d,
        "calib.peft",
        "mask(density=0.01, by=fisher, calib=100) on layers[*].attn.q",
        "",
    );
    let run = d.join("calib-run");
    let warm = minilm_spec(
        &d,
        "warm.peft",
        "mask(density=0.01, by=lt_sft, warmup_steps=5) on layers[*].attn.q",
        "",
    );
    let warm_run = d.join("warm-run");
    let out = peftc(&[
        "train",
        &warm.display().to_string(),
        "--out",
        &warm_run.display().to_string(),
        "--max-steps",
        "5",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("warm-up") && err.contains("warmup_steps = 5"),
        "{err}"
    );
    assert!(!warm_run.exists(), "a refused run leaves no folder");
    let out = peftc(&[
        "train",
        &sp.display().to_string(),
        "--out",
        &run.display().to_string(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("calibration batches"), "{err}");
    assert!(!run.exists(), "a refused run leaves no folder");
}

/// `mask(r=K, by=random)` is Hugging Face PEFT's SHiRA: it exports with
/// `r·(in + out)` entries per layer and reads back with the run's logits; a
/// magnitude mask has no HF form and is refused.
#[test]
fn a_random_mask_with_a_rank_budget_exports_as_shira() {
    let d = temp_dir("masks-shira");
    let s = |p: &Path| p.display().to_string();
    let sp = minilm_spec(
        &d,
        "shira.peft",
        "mask(r=2, by=random) on layers[*].attn.{q, v}",
        "",
    );
    let run = d.join("run");
    let hf = d.join("hf");
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "2"]);
    ok(&["export", &s(&run), "--format", "hf", "--out", &s(&hf)]);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hf.join("adapter_config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(cfg["peft_type"], "SHIRA");
    assert_eq!(cfg["r"], 2);
    let t = read_safetensors_all_float(&hf.join("adapter_model.safetensors")).expect("hf file");
    let key = "base_model.model.bert.encoder.layer.0.attention.self.query";
    assert_eq!(t[&format!("{key}.shira_weight")].shape, [2 * (384 + 384)]);
    assert_eq!(
        t[&format!("{key}.shira_indices")].shape,
        [2, 2 * (384 + 384)]
    );
    let from_run = infer_logits(&sp, &[&s(&run)], TEXTS, "cpu");
    let from_hf = infer_logits(&sp, &[&s(&hf)], TEXTS, "cpu");
    let diff = max_diff(&from_run, &from_hf);
    assert!(diff <= 1e-6, "the SHiRA export reads back {diff:e} off");

    let sp = minilm_spec(&d, "mag.peft", "mask(r=2) on layers[*].attn.q", "");
    let run = d.join("mag-run");
    ok(&["train", &s(&sp), "--out", &s(&run), "--max-steps", "1"]);
    let out = peftc(&[
        "export",
        &s(&run),
        "--format",
        "hf",
        "--out",
        &s(&d.join("mag-hf")),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mask") && err.contains("Hugging Face"),
        "{err}"
    );
}
