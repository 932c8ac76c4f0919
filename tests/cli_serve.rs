//! `peftc serve` end to end over HTTP on the loopback interface, driven by a
//! real HTTP client: greedy completions and chat completions equal Hugging
//! Face's `generate` (fixtures from tests/reference/make_generate.py and
//! make_chat.py) for the base and a Hugging Face PEFT adapter, alone and
//! concurrently; streaming delivers the non-streamed text; adapters load,
//! evict and unload while serving; bad requests get JSON errors with the
//! right status; a client that leaves mid-stream frees its slot; SIGTERM
//! drains the request in flight and exits 0. Classification specs answer
//! /v1/classify with `peftc infer`'s probabilities.

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    http: reqwest::blocking::Client,
}

impl Server {
    /// Starts `peftc serve SPEC --port 0 ARGS` and waits until it listens.
    fn start(spec: &std::path::Path, args: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .arg("serve")
            .arg(spec)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peftc serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start:\n{}", log.lock().expect("log"));
            }
        };
        Server {
            child,
            url,
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string())
    }

    fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().expect("body");
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, v)
    }

    /// Announces a body of `len` bytes and reads the answer without sending
    /// it (the server refuses on the header; a client still writing would
    /// see the connection close under it).
    fn oversized(&self, path: &str, len: usize) -> (u16, Value) {
        use std::io::Write;
        let addr = self.url.trim_start_matches("http://").to_string();
        let mut c = std::net::TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut w = c.try_clone().expect("clone");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
        );
        // The body from another thread: the server may answer and close
        // before it has all been written.
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&vec![b' '; len]);
        });
        let mut bytes = Vec::new();
        let _ = c.read_to_end(&mut bytes);
        let _ = writer.join();
        let answer = String::from_utf8_lossy(&bytes).to_string();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let json = body.find('{').map_or("", |i| &body[i..]);
        let json = json.rfind('}').map_or("", |j| &json[..=j]);
        (
            status,
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer:?}")),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("request");
        (r.status().as_u16(), r.text().expect("body"))
    }

    /// The data lines of a streamed request, `[DONE]` included.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .expect("request");
        assert_eq!(r.status().as_u16(), 200, "{path} stream");
        let text = r.text().expect("body");
        text.lines()
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// SIGTERM; the exit status.
    fn stop(self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the server did not stop:\n{}",
                self.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/generate").join(name))
        .expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn greedy(model: &str, prompt: &str, n: u64) -> Value {
    json!({"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0})
}

fn text_of(v: &Value) -> String {
    v["choices"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

#[test]
fn serves_the_openai_api_with_adapters_as_hugging_face_generates() {
    let d = temp_dir("serve-lm");
    let spec = smollm2_lora_spec(&d);
    let lora = repo().join("tests/fixtures/generate/lora");
    let lora = lora.to_str().expect("path");
    let server = Server::start(
        &spec,
        &[
            "--adapter",
            &format!("hf={lora}"),
            "--max-adapters",
            "1",
            "--served-model-name",
            "smol",
        ],
    );
    let (status, health) = server.get("/health");
    assert_eq!(status, 200, "{health}");
    let (_, models) = server.get("/v1/models");
    let models: Value = serde_json::from_str(&models).expect("models");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["smol", "hf"]);

    // Greedy completions, base and adapter, all at once: each equals what
    // Hugging Face generates for it alone.
    let f = fixture("greedy.json");
    let n = f["max_tokens"].as_u64().expect("n");
    let cases = f["cases"].as_array().expect("cases").clone();
    let server = Arc::new(server);
    let mut threads = Vec::new();
    for case in &cases {
        for (model, want) in [("smol", "base_text"), ("hf", "lora_text")] {
            let (s, case) = (server.clone(), case.clone());
            threads.push(std::thread::spawn(move || {
                let prompt = case["prompt"].as_str().expect("prompt");
                let (status, v) = s.post("/v1/completions", &greedy(model, prompt, n));
                assert_eq!(status, 200, "{v}");
                assert_eq!(
                    text_of(&v),
                    case[want].as_str().expect("text"),
                    "{model}: {prompt}"
                );
                assert_eq!(
                    v["usage"]["prompt_tokens"].as_u64(),
                    case["prompt_ids"].as_array().map(|a| a.len() as u64)
                );
            }));
        }
    }
    for t in threads {
        t.join().expect("a concurrent request failed");
    }
    // Alone, the six would take 6 × 23 decoding steps.
    let steps = server.metric("peftc_decode_steps_total");
    assert!(
        steps < (cases.len() as u64 * 2 * (n - 1)) as f64 / 2.0,
        "concurrent requests did not share decoding steps: {steps}"
    );

    // Streaming delivers the same text, then [DONE].
    let prompt = cases[0]["prompt"].as_str().expect("prompt");
    let mut body = greedy("hf", prompt, n);
    body["stream"] = json!(true);
    let lines = server.stream("/v1/completions", &body);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).expect("chunk"))
        .collect();
    let streamed: String = chunks.iter().map(text_of).collect();
    assert_eq!(streamed, cases[0]["lora_text"].as_str().expect("text"));
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "length"
    );

    // Chat: the GGUF's template, rendered as transformers renders it.
    let chat = fixture("chat.json");
    let cn = chat["max_tokens"].as_u64().expect("n");
    for case in chat["cases"].as_array().expect("cases") {
        for (model, want, tokens) in [("smol", "base_text", "base"), ("hf", "lora_text", "lora")] {
            let body = json!({"model": model, "messages": case["messages"], "max_tokens": cn, "temperature": 0});
            let (status, v) = server.post("/v1/chat/completions", &body);
            assert_eq!(status, 200, "{v}");
            let m = &v["choices"][0]["message"];
            assert_eq!(m["role"], "assistant");
            assert_eq!(m["content"], case[want], "{model}: {}", case["text"]);
            let ended = case[tokens].as_array().map(|a| (a.len() as u64) < cn);
            let reason = if ended == Some(true) {
                "stop"
            } else {
                "length"
            };
            assert_eq!(v["choices"][0]["finish_reason"], reason);
            assert_eq!(
                v["usage"]["prompt_tokens"].as_u64(),
                case["prompt_ids"].as_array().map(|a| a.len() as u64)
            );
        }
        let body = json!({"model": "hf", "messages": case["messages"], "max_tokens": cn, "temperature": 0, "stream": true});
        let lines = server.stream("/v1/chat/completions", &body);
        let deltas: String = lines
            .iter()
            .filter(|l| *l != "[DONE]")
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("chunk");
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(deltas, case["lora_text"].as_str().expect("text"));
    }

    // An adapter loaded while serving serves the next request; with one
    // resident slot it evicts `hf`, which reloads from disk on demand.
    let (status, v) = server.post(
        "/v1/load_lora_adapter",
        &json!({"lora_name": "late", "lora_path": lora}),
    );
    assert_eq!(status, 200, "{v}");
    let (_, v) = server.post("/v1/completions", &greedy("late", prompt, n));
    assert_eq!(text_of(&v), cases[0]["lora_text"].as_str().expect("text"));
    let (_, v) = server.post("/v1/completions", &greedy("hf", prompt, n));
    assert_eq!(text_of(&v), cases[0]["lora_text"].as_str().expect("text"));
    assert!(server.metric("peftc_adapter_evictions_total") >= 2.0);
    assert_eq!(server.metric("peftc_adapters_resident"), 1.0);
    let (status, v) = server.post("/v1/unload_lora_adapter", &json!({"lora_name": "late"}));
    assert_eq!(status, 200, "{v}");
    let (status, v) = server.post("/v1/completions", &greedy("late", prompt, n));
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("`late`")
    );

    // Bad input: a JSON error body with the right status, and serving goes on.
    let (status, v) = server.post_raw("/v1/completions", "{\"model\": ".into());
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("line 1")
    );
    let (status, v) = server.post("/v1/completions", &greedy("nope", prompt, 4));
    assert_eq!(status, 404, "{v}");
    // SmolLM2's context: 8192 positions.
    let long = " word".repeat(9000);
    let (status, v) = server.post("/v1/completions", &greedy("smol", &long, 4));
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("9000 tokens") && msg.contains("context is 8192"),
        "{msg}"
    );
    let (status, v) = server.post(
        "/v1/load_lora_adapter",
        &json!({"lora_name": "missing", "lora_path": d.join("no-such-dir")}),
    );
    assert_eq!(status, 400, "{v}");
    let bad = d.join("bad-adapter");
    std::fs::create_dir_all(&bad).expect("dir");
    write_misshapen_adapter(&repo().join("tests/fixtures/generate/lora"), &bad);
    let (status, v) = server.post(
        "/v1/load_lora_adapter",
        &json!({"lora_name": "bad", "lora_path": bad}),
    );
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("lora_A") && msg.contains("shape"), "{msg}");
    let (status, v) = server.oversized("/v1/completions", 5 << 20);
    assert_eq!(status, 413, "{v}");
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"model": "smol", "prompt": "x", "temperature": -1}),
    );
    assert_eq!(status, 400, "{v}");

    // A client that leaves mid-stream frees its slot.
    {
        let mut r = server
            .http
            .post(format!("{}/v1/completions", server.url))
            .json(&json!({"model": "smol", "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": true}))
            .send()
            .expect("stream");
        let mut first = [0u8; 64];
        let _ = r.read(&mut first).expect("first bytes");
    }
    let t = Instant::now();
    while server.metric("peftc_active_sequences") > 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.metric("peftc_request_errors_total") >= 6.0);

    // SIGTERM while a request runs: it completes, then the server exits 0.
    let s = server.clone();
    let owned = prompt.to_string();
    let inflight =
        std::thread::spawn(move || s.post("/v1/completions", &greedy("smol", &owned, n)));
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    let (code, v) = inflight.join().expect("in-flight request");
    let server = Arc::try_unwrap(server).ok().expect("one owner");
    let status = server.wait();
    assert_eq!(code, 200, "{v}");
    assert_eq!(text_of(&v), cases[0]["base_text"].as_str().expect("text"));
    assert!(status.success(), "exit {status:?}");
}

/// The fixture adapter with `lora_A` of one module cut to the wrong rank.
fn write_misshapen_adapter(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(
        from.join("adapter_config.json"),
        to.join("adapter_config.json"),
    )
    .expect("copy");
    let bytes = std::fs::read(from.join("adapter_model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut cut = false;
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        let mut data = view.data().to_vec();
        if !cut && name.contains("lora_A") {
            shape[0] -= 1;
            data.truncate(shape.iter().product::<usize>() * 4);
            cut = true;
        }
        owned.push((name, shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &to.join("adapter_model.safetensors"))
        .expect("write");
}

#[test]
fn classification_specs_answer_classify_with_infer_probabilities() {
    let d = temp_dir("serve-classify");
    let spec = minilm_spec(&d, "cls.peft", "lora(r=4) on layers[*].attn.{q, v}", "");
    let texts = [
        "Win a free phone now, text WIN",
        "See you at lunch tomorrow",
    ];
    let want = infer_logits(&spec, &[], &texts, "cpu");
    let server = Server::start(&spec, &[]);
    let (_, models) = server.get("/v1/models");
    let models: Value = serde_json::from_str(&models).expect("models");
    let base = models["data"][0]["id"].as_str().expect("id").to_string();
    let (status, v) = server.post("/v1/classify", &json!({"model": base, "input": texts}));
    assert_eq!(status, 200, "{v}");
    for (i, logits) in want.iter().enumerate() {
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let probs = v["data"][i]["probs"].as_array().expect("probs");
        for (p, l) in probs.iter().zip(logits) {
            let p = p.as_f64().expect("p");
            assert!((p - (l - m).exp() / z).abs() < 1e-5, "text {i}: {p} vs {l}");
        }
    }
    let (status, v) = server.post("/v1/completions", &greedy(&base, "hi", 2));
    assert_eq!(status, 400, "{v}");
    assert!(server.stop().success());
}
