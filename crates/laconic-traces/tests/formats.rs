//! Reading traces people already have: R1 `<think>` text, OpenAI chat exports, DeepSeek API
//! records, flat files with their own field names, and bad lines named by file and line.

use std::fs;
use std::path::{Path, PathBuf};

use laconic_traces::formats::{FieldMap, read_jsonl};
use laconic_traces::schema::{read_traces, write_traces};
use laconic_traces::{DatasetSpec, Grader, Trace};
use serde_json::{Value, json};

fn write_lines(dir: &Path, name: &str, lines: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, text).expect("write");
    path
}

/// Reads with the default field names, which must succeed.
fn read(path: &Path) -> Vec<Trace> {
    read_jsonl(path, &FieldMap::default()).expect("read")
}

/// Every trace must survive a write and a strict read back as a laconic trace file.
fn assert_round_trip(dir: &Path, traces: &[Trace]) {
    let out = dir.join("round-trip.jsonl");
    write_traces(&out, traces).expect("write traces");
    assert_eq!(read_traces(&out).expect("read traces"), traces);
}

#[test]
fn r1_generations_split_at_think() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "r1.jsonl",
        &[
            // DeepSeek-R1's template opens `<think>` in the prompt: only `</think>` is generated.
            json!({
                "problem": "Janet's ducks lay 16 eggs per day. She eats three and bakes with four. She sells the rest for $2 each. How much does she make?",
                "generation": "Okay, so 16 - 3 - 4 = 9 eggs.\nThen 9 * 2 = 18.\n</think>\n\nShe sells 9 eggs at $2 each.\n\n**Final Answer**\n\\[\n\\boxed{18}\n\\]",
                "answer": "18",
                "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
            }),
            json!({
                "problem": "What is $\\frac{7}{2} + 1$?",
                "generation": "<think>\n7/2 + 1 = 9/2.\n</think>\n\nThe sum is $\\boxed{\\dfrac{9}{2}}$.",
                "answer": "\\frac{9}{2}"
            }),
            // Cut off while thinking: the reasoning is kept, no answer is stated.
            json!({
                "problem": "What is 2 + 2?",
                "generation": "<think>\nTwo plus two is",
                "answer": 4
            }),
        ],
    );
    let traces = read(&path);
    assert_eq!(traces.len(), 3);

    let t = &traces[0];
    assert_eq!(t.id, "jsonl/r1/0");
    assert!(t.question.starts_with("Janet's ducks"), "{}", t.question);
    assert_eq!(
        t.reasoning,
        "Okay, so 16 - 3 - 4 = 9 eggs.\nThen 9 * 2 = 18."
    );
    assert_eq!(t.answer, "18");
    assert_eq!(t.gold.as_deref(), Some("18"));
    let provenance = t.provenance.as_ref().expect("provenance");
    assert_eq!(provenance.source, format!("jsonl:{}:1", path.display()));
    assert_eq!(
        provenance.model.as_deref(),
        Some("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    );
    assert!(Grader::Gsm8k.grade(&t.completion(), "18").correct);

    let t = &traces[1];
    assert_eq!(t.reasoning, "7/2 + 1 = 9/2.");
    assert_eq!(t.answer, "\\dfrac{9}{2}");
    assert!(Grader::Math.equivalent(&t.answer, t.gold.as_deref().expect("gold")));
    assert_eq!(t.provenance.as_ref().expect("provenance").model, None);

    let t = &traces[2];
    assert_eq!(t.reasoning, "Two plus two is");
    assert_eq!(
        t.answer, "4",
        "a flat record falls back to its answer field"
    );
    assert_eq!(t.gold.as_deref(), Some("4"));

    assert_round_trip(dir.path(), &traces);
}

#[test]
fn openai_chat_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "chat.jsonl",
        &[
            // `<think>` inside the assistant's content, a system message, a gold answer.
            json!({"messages": [
                {"role": "system", "content": "Reason briefly."},
                {"role": "user", "content": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?"},
                {"role": "assistant", "content": "<think>\nWhite is 2 / 2 = 1 bolt, so 2 + 1 = 3.\n</think>\n\nIt takes 3 bolts.\n#### 3"}
            ], "answer": "3", "model": "Qwen/QwQ-32B"}),
            // Content parts, and the reasoning in the assistant's `reasoning_content`.
            json!({"messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is 6 times 7?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "The answer is 42."}], "reasoning_content": "6 * 7 = 42."}
            ]}),
            // A multi-turn conversation: only the last exchange is kept.
            json!({"messages": [
                {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello. What can I do?"},
                {"role": "user", "content": "What is 10 - 4?"},
                {"role": "assistant", "content": "10 - 4 = 6.\nSo the answer is 6."}
            ]}),
            // No assistant message: a problem, with its gold answer.
            json!({"messages": [
                {"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many in all?"}
            ], "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"}),
            // ShareGPT's `conversations`.
            json!({"conversations": [
                {"from": "human", "value": "What is 1,000 + 600?"},
                {"from": "gpt", "value": "1000 + 600 = 1600\n</think>\n\\boxed{1,600}"}
            ], "gold": "1,600"}),
        ],
    );
    let traces = read(&path);
    assert_eq!(traces.len(), 5);

    let t = &traces[0];
    assert_eq!(t.system.as_deref(), Some("Reason briefly."));
    assert!(t.question.starts_with("A robe takes"), "{}", t.question);
    assert_eq!(t.reasoning, "White is 2 / 2 = 1 bolt, so 2 + 1 = 3.");
    assert_eq!(t.answer, "3");
    assert_eq!(t.gold.as_deref(), Some("3"));
    let provenance = t.provenance.as_ref().expect("provenance");
    assert_eq!(provenance.model.as_deref(), Some("Qwen/QwQ-32B"));
    assert_eq!(provenance.source, format!("jsonl:{}:1", path.display()));

    let t = &traces[1];
    assert_eq!(t.system, None);
    assert_eq!(t.question, "What is 6 times 7?");
    assert_eq!(t.reasoning, "6 * 7 = 42.");
    assert_eq!(t.answer, "42");
    assert_eq!(t.gold, None);

    let t = &traces[2];
    assert_eq!(t.question, "What is 10 - 4?");
    assert_eq!(t.reasoning, "10 - 4 = 6.\nSo the answer is 6.");
    assert_eq!(t.answer, "6");

    let t = &traces[3];
    assert!(t.question.starts_with("Natalia sold"), "{}", t.question);
    assert_eq!(t.reasoning, "");
    assert_eq!(t.answer, "72");
    assert_eq!(t.gold.as_deref(), Some("72"));
    assert_eq!(t.completion(), "#### 72");

    let t = &traces[4];
    assert_eq!(t.question, "What is 1,000 + 600?");
    assert_eq!(t.reasoning, "1000 + 600 = 1600");
    assert_eq!(t.answer, "1,600");
    assert_eq!(t.gold.as_deref(), Some("1600"));
    assert_eq!(t.id, "jsonl/chat/4");

    assert_round_trip(dir.path(), &traces);
}

#[test]
fn deepseek_api_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "deepseek.jsonl",
        &[
            json!({
                "question": "Weng earns $12 an hour for babysitting. Yesterday she babysat 50 minutes. How much did she earn?",
                "reasoning_content": "12 / 60 = 0.2 per minute. 0.2 * 50 = 10.",
                "content": "Weng earned **$10**.\n\nThe final answer is $10.",
                "model": "deepseek-reasoner",
                "answer": 10
            }),
            // The reply holds no marker: the visible reply is the answer.
            json!({
                "prompt": "Name the capital of France.",
                "reasoning_content": "The capital of France is Paris.",
                "content": "Paris",
                "system": "Answer in one word."
            }),
            // A null `content` (cut off at max_tokens): no answer, the gold is not used for it.
            json!({
                "question": "What is 3 + 4?",
                "reasoning_content": "3 + 4 is",
                "content": null,
                "answer": "7"
            }),
        ],
    );
    let traces = read(&path);
    let t = &traces[0];
    assert_eq!(t.reasoning, "12 / 60 = 0.2 per minute. 0.2 * 50 = 10.");
    assert_eq!(t.answer, "$10", "the answer as the reply writes it");
    assert!(Grader::Gsm8k.grade(&t.completion(), "10").correct);
    assert_eq!(t.gold.as_deref(), Some("10"));
    assert_eq!(
        t.provenance.as_ref().expect("provenance").model.as_deref(),
        Some("deepseek-reasoner")
    );

    let t = &traces[1];
    assert_eq!(t.question, "Name the capital of France.");
    assert_eq!(t.system.as_deref(), Some("Answer in one word."));
    assert_eq!(t.reasoning, "The capital of France is Paris.");
    assert_eq!(t.answer, "Paris");

    let t = &traces[2];
    assert_eq!(t.reasoning, "3 + 4 is");
    assert_eq!(t.answer, "", "a model's empty reply states no answer");
    assert_eq!(t.gold.as_deref(), Some("7"));

    assert_round_trip(dir.path(), &traces);
}

#[test]
fn flat_file_with_custom_field_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "custom.jsonl",
        &[
            json!({
                "uid": "shop-1",
                "input": {"text": "A laptop costs $800 and a printer costs twice that. What do both cost?", "lang": "en"},
                "rationale": "The printer costs 2 * 800 = 1600.\nTogether: 800 + 1600 = 2400.",
                "target": "$2,400",
                "instructions": "Be concise."
            }),
            json!({
                "uid": 7,
                "input": {"text": "How many legs do 3 spiders have?"},
                "rationale": "<think>Each has 8 legs: 3 * 8 = 24.</think>\n#### 24",
                "target": "24"
            }),
        ],
    );
    let fields = FieldMap {
        id: Some("uid".into()),
        question: "input.text".into(),
        answer: "target".into(),
        reasoning: Some("rationale".into()),
        system: Some("instructions".into()),
    };
    let traces = read_jsonl(&path, &fields).expect("read");
    assert_eq!(traces.len(), 2);

    let t = &traces[0];
    assert_eq!(t.id, "shop-1");
    assert!(t.question.starts_with("A laptop costs"), "{}", t.question);
    assert_eq!(t.system.as_deref(), Some("Be concise."));
    assert_eq!(
        t.reasoning,
        "The printer costs 2 * 800 = 1600.\nTogether: 800 + 1600 = 2400."
    );
    assert_eq!(
        t.answer, "$2,400",
        "no answer stated: the answer field as written"
    );
    assert_eq!(t.gold.as_deref(), Some("2400"));

    let t = &traces[1];
    assert_eq!(t.id, "7");
    assert_eq!(t.reasoning, "Each has 8 legs: 3 * 8 = 24.");
    assert_eq!(t.answer, "24");

    // The default names do not find this file's question, and the error lists them.
    let message = read_jsonl(&path, &FieldMap::default())
        .expect_err("default names")
        .to_string();
    assert!(
        message.ends_with(
            "custom.jsonl:1: no question: expected a string field `question`, `problem` or \
             `prompt`, or a `messages` array"
        ),
        "{message}"
    );

    // Through a dataset spec, with the field names applied afterwards.
    let spec = DatasetSpec::parse(&format!("jsonl:{}", path.display()))
        .expect("spec")
        .with_fields(fields);
    assert_eq!(spec.load().expect("load"), traces);
    assert_eq!(spec.grader(), None);

    assert_round_trip(dir.path(), &traces);
}

#[test]
fn chat_spec_reads_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "c.jsonl",
        &[json!({"messages": [
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "2 + 3 = 5\n#### 5"}
        ]})],
    );
    let traces = DatasetSpec::parse(&format!("chat:{}", path.display()))
        .expect("spec")
        .load()
        .expect("load");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].reasoning, "2 + 3 = 5");
    assert_eq!(traces[0].answer, "5");
    assert_eq!(traces[0].completion(), "2 + 3 = 5\n#### 5");
}

/// Reading `lines` (raw text) with `fields` must fail; the message, which must name
/// `bad.jsonl:<line>`.
fn bad(lines: &str, fields: &FieldMap, line: usize) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    fs::write(&path, lines).expect("write");
    let message = read_jsonl(&path, fields)
        .expect_err("bad input must fail")
        .to_string();
    let at = format!("{}:{line}: ", path.display());
    assert!(
        message.starts_with(&at),
        "expected `{at}...`, got: {message}"
    );
    message[at.len()..].to_string()
}

#[test]
fn bad_lines_name_the_file_and_line() {
    let d = FieldMap::default();
    let ok = r#"{"question": "What is 1 + 1?", "response": "1 + 1 = 2\n#### 2"}"#;

    let m = bad(&format!("{ok}\n{{\"question\": \"x\", \n"), &d, 2);
    assert!(m.starts_with("invalid JSON: "), "{m}");

    let m = bad(&format!("{ok}\n\n[1, 2]\n"), &d, 3);
    assert_eq!(m, "expected a JSON object, found an array");

    let m = bad("{\"question\": 12}\n", &d, 1);
    assert_eq!(m, "field `question` must be a string, found a number");

    let m = bad("{\"problem\": \"  \"}\n", &d, 1);
    assert_eq!(m, "empty question");

    let m = bad("{\"query\": \"What?\"}\n", &d, 1);
    assert_eq!(
        m,
        "no question: expected a string field `question`, `problem` or `prompt`, or a \
         `messages` array"
    );

    let m = bad("{\"question\": \"Q?\", \"answer\": [1]}\n", &d, 1);
    assert_eq!(
        m,
        "field `answer` (the answer) must be a string or a number, found an array"
    );

    let m = bad(
        "{\"question\": \"Q?\", \"response\": {\"text\": \"x\"}}\n",
        &d,
        1,
    );
    assert_eq!(m, "field `response` must be a string, found an object");

    let m = bad("{\"question\": \"Q?\", \"model\": 3}\n", &d, 1);
    assert_eq!(m, "field `model` must be a string, found a number");

    let m = bad("{\"messages\": \"hi\"}\n", &d, 1);
    assert_eq!(m, "`messages` must be an array of messages, found a string");

    let m = bad(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Q?\"}, {\"content\": \"A\"}]}\n",
        &d,
        1,
    );
    assert_eq!(m, "`messages[1]`: a message needs a `role` (or `from`)");

    let m = bad(
        "{\"messages\": [{\"role\": \"assistant\", \"content\": \"5\"}, {\"role\": \"user\", \"content\": \"Q?\"}]}\n",
        &d,
        1,
    );
    assert_eq!(
        m,
        "no question: no user message before the last assistant message in `messages`"
    );

    let with_id = FieldMap {
        id: Some("id".into()),
        ..FieldMap::default()
    };
    let m = bad(
        "{\"id\": \"a\", \"question\": \"Q1?\"}\n{\"question\": \"Q2?\"}\n",
        &with_id,
        2,
    );
    assert_eq!(m, "missing field `id` (the id)");
    let m = bad(
        "{\"id\": \"a\", \"question\": \"Q1?\"}\n\n{\"id\": \"a\", \"question\": \"Q2?\"}\n",
        &with_id,
        3,
    );
    assert_eq!(m, "duplicate id `a` (first on line 1)");
    let m = bad("{\"id\": 1.5, \"question\": \"Q?\"}\n", &with_id, 1);
    assert_eq!(
        m,
        "field `id` (the id) must be a non-empty string or an integer, found the number 1.5"
    );

    let with_reasoning = FieldMap {
        reasoning: Some("solution".into()),
        ..FieldMap::default()
    };
    let m = bad("{\"question\": \"Q?\"}\n", &with_reasoning, 1);
    assert_eq!(m, "missing field `solution` (the reasoning)");

    // A truncated last line gets the hint.
    let m = bad(&format!("{ok}\n{{\"question\": \"Q"), &d, 2);
    assert!(m.contains("probably truncated"), "{m}");
}

#[test]
fn a_missing_file_names_the_path() {
    let message = read_jsonl(Path::new("no/such/traces.jsonl"), &FieldMap::default())
        .expect_err("missing")
        .to_string();
    assert!(
        message.starts_with("cannot open no/such/traces.jsonl: "),
        "{message}"
    );
}
