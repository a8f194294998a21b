//! Reading the traces people already have: R1-style `<think>` text, OpenAI chat `messages`,
//! DeepSeek-style `reasoning_content`, and generic JSONL whose field names a [`FieldMap`] sets.
//!
//! Every shape ends up the same way: the reasoning and the final answer in separate fields of a
//! [`Trace`]. [`read_jsonl`] detects the shape line by line, so one file may mix them:
//!
//! 1. **chat**: a `messages` array (or ShareGPT's `conversations`, with `from`/`value` and the
//!    roles `human`/`gpt`). The last assistant message is the response; the question is the
//!    last user message before it; the system messages before it are the system prompt.
//!    Earlier turns of a multi-turn conversation are not kept.
//! 2. **DeepSeek API**: a top-level `reasoning_content` (the reasoning) beside `content` (the
//!    reply), with the question in the [`FieldMap`]'s question field.
//! 3. **flat**: a record with the [`FieldMap`]'s fields. Its response text (the reasoning
//!    field, or the first of `content`, `response`, `completion`, `output`, `generation`,
//!    `solution`, `reasoning` when none is named) is split like a reply; a record without one
//!    is a problem.
//!
//! A reply is split by [`split_response`]: the reasoning is the explicit reasoning field if
//! there is one, else the `<think>` part ([`split_think`]); the answer is [`final_answer`] of
//! what follows. Answers are kept as the text states them (`1,600`, `\frac{9}{2}`), like the
//! GSM8K and MATH-500 readers; the graders normalize them when they compare.
//!
//! Prior art: DeepSeek-R1's chat template (`<think>` opened in the prompt, so generations hold
//! only `</think>`), the DeepSeek API and vLLM's reasoning parsers (`reasoning_content`), and
//! the OpenAI chat format with content parts.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Result;
use crate::grade::Grader;
use crate::jsonl::{self, line_error};
use crate::schema::{Provenance, SCHEMA_VERSION, Trace, json_kind};

/// The opening reasoning tag of R1-style models.
const THINK_OPEN: &str = "<think>";
/// The closing reasoning tag of R1-style models.
const THINK_CLOSE: &str = "</think>";

/// The question fields tried, in order, when [`FieldMap::question`] is the default.
const QUESTION_NAMES: [&str; 3] = ["question", "problem", "prompt"];
/// The answer fields tried, in order, when [`FieldMap::answer`] is the default.
const ANSWER_NAMES: [&str; 2] = ["answer", "gold"];
/// The explicit reasoning fields of a DeepSeek-style record or an assistant message.
const REASONING_NAMES: [&str; 2] = ["reasoning_content", "reasoning"];
/// The response fields tried, in order, on a flat record when [`FieldMap::reasoning`] is unset.
const RESPONSE_NAMES: [&str; 7] = [
    "content",
    "response",
    "completion",
    "output",
    "generation",
    "solution",
    "reasoning",
];

/// The field names of a generic JSONL line. Each name may be a dotted path into nested objects
/// and arrays (`sample.text`, `choices.0.message.content`); a key that itself holds a dot is
/// found first. A `null` value counts as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    /// The field holding a unique id (a string or an integer), required on every line when set.
    /// Default `None`: ids are `jsonl/<file stem>/<0-based index>`, as the GSM8K reader makes.
    pub id: Option<String>,
    /// The question field. Default `question`; while it is the default, `problem` and `prompt`
    /// are tried too, in that order.
    pub question: String,
    /// The reference (gold) answer field: a string or a number, a bare answer or a full
    /// solution. Default `answer`; while it is the default, `gold` is tried too.
    pub answer: String,
    /// The field holding the reasoning or the whole response (e.g. `solution`, `response`);
    /// `<think>` in it is split off. Default `None`: the first of `content`, `response`,
    /// `completion`, `output`, `generation`, `solution`, `reasoning` that is present.
    pub reasoning: Option<String>,
    /// The system prompt field. Default `None`: `system`, when present.
    pub system: Option<String>,
}

impl Default for FieldMap {
    fn default() -> Self {
        Self {
            id: None,
            question: QUESTION_NAMES[0].into(),
            answer: ANSWER_NAMES[0].into(),
            reasoning: None,
            system: None,
        }
    }
}

impl FieldMap {
    /// The question fields to try, in order.
    fn question_names(&self) -> Vec<&str> {
        if self.question == QUESTION_NAMES[0] {
            QUESTION_NAMES.to_vec()
        } else {
            vec![self.question.as_str()]
        }
    }

    /// The answer fields to try, in order.
    fn answer_names(&self) -> Vec<&str> {
        if self.answer == ANSWER_NAMES[0] {
            ANSWER_NAMES.to_vec()
        } else {
            vec![self.answer.as_str()]
        }
    }

    /// The system fields to try.
    fn system_names(&self) -> Vec<&str> {
        vec![self.system.as_deref().unwrap_or("system")]
    }
}

/// Splits R1-style text into its reasoning and the rest: `(reasoning, rest)`, both trimmed.
///
/// - `<think>R</think>A`: `(Some(R), A)` (text before `<think>` is kept in the rest);
/// - `R</think>A`, no opening tag (DeepSeek-R1 templates put `<think>` in the prompt, so the
///   generation starts inside the reasoning): `(Some(R), A)`;
/// - `<think>R` never closed (a generation cut short): `(Some(R), "")` (or what came before
///   `<think>`, normally nothing);
/// - no tags: `(None, text)`.
///
/// The first `</think>` ends the reasoning; an empty `<think></think>` gives `Some("")`.
pub fn split_think(text: &str) -> (Option<String>, String) {
    let open = text.find(THINK_OPEN);
    let close = text.find(THINK_CLOSE);
    let (reasoning, rest) = match (open, close) {
        (Some(open), Some(close)) if open < close => {
            let before = text[..open].trim();
            let after = text[close + THINK_CLOSE.len()..].trim();
            let rest = match (before.is_empty(), after.is_empty()) {
                (true, _) => after.to_string(),
                (false, true) => before.to_string(),
                (false, false) => format!("{before}\n\n{after}"),
            };
            (&text[open + THINK_OPEN.len()..close], rest)
        }
        (_, Some(close)) => (
            &text[..close],
            text[close + THINK_CLOSE.len()..].trim().to_string(),
        ),
        (Some(open), None) => (
            &text[open + THINK_OPEN.len()..],
            text[..open].trim().to_string(),
        ),
        (None, None) => return (None, text.trim().to_string()),
    };
    (Some(reasoning.trim().to_string()), rest)
}

/// The final answer a response states, as written; `None` when it states none.
///
/// In this order:
/// 1. the content of the last `\boxed{...}` or `\fbox{...}` (nested braces), trimmed;
/// 2. the rest of a last line that starts with `####` (GSM8K's and laconic's answer line);
/// 3. after the last "final answer", "answer is" or "answer:" (any case, `**Final Answer**`
///    too): the first `$...$` on its line, else that line up to the end of its first
///    sentence, without a trailing `.` or Markdown `**`.
///
/// There is no last-number guess: a reply that commits to no answer has none. The graders
/// ([`Grader::extract`]) read the same markers and normalize what they find.
pub fn final_answer(text: &str) -> Option<String> {
    locate_answer(text).map(|(answer, _)| answer)
}

/// [`final_answer`], and the byte offset of its `####` line when that is where it was found
/// (the reasoning then stops there, as in GSM8K).
fn locate_answer(text: &str) -> Option<(String, Option<usize>)> {
    if let Some(boxed) = last_boxed(text) {
        return Some((boxed.to_string(), None));
    }
    if let Some(at) = text.rfind("####") {
        let line = text[at + 4..].trim();
        if !line.is_empty() && !line.contains('\n') {
            return Some((line.to_string(), Some(at)));
        }
    }
    after_marker(text).map(|answer| (answer, None))
}

/// The content of the last closed `\boxed{...}` or `\fbox{...}` (or `\boxed 5`), trimmed:
/// the graders' own reading.
fn last_boxed(text: &str) -> Option<&str> {
    crate::grade::extract::last_boxed(text).map(str::trim)
}

/// The answer after the last answer marker (rule 3 of [`final_answer`]).
fn after_marker(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let end = ["final answer", "answer is", "answer:"]
        .iter()
        .filter_map(|marker| lower.rfind(marker).map(|at| at + marker.len()))
        .max()?;
    let punctuation = |c: char| c.is_whitespace() || matches!(c, ':' | '*' | '#');
    let rest = text[end..].trim_start_matches(punctuation);
    let rest = match rest.strip_prefix("is") {
        Some(after) if after.starts_with(|c: char| c.is_whitespace() || c == ':') => {
            after.trim_start_matches(punctuation)
        }
        _ => rest,
    };
    let line = rest.lines().next().unwrap_or("").trim();
    if let Some(open) = unescaped_dollar(line, 0) {
        let start = if line[open + 1..].starts_with('$') {
            open + 2
        } else {
            open + 1
        };
        if let Some(close) = unescaped_dollar(line, start) {
            return non_empty(line[start..close].trim());
        }
    }
    let sentence = line.split(". ").next().unwrap_or(line);
    non_empty(
        sentence
            .trim()
            .trim_end_matches('.')
            .trim_matches('*')
            .trim(),
    )
}

/// The byte offset of the first `$` at or after `from` that is not escaped as `\$`.
fn unescaped_dollar(s: &str, from: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'$' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Splits a model's reply into `(reasoning, answer)`.
///
/// `reasoning` is an explicit reasoning text (DeepSeek's `reasoning_content`), if the reply
/// came with one; `content` is the reply itself. Then:
///
/// - with explicit reasoning, or a `<think>` part in `content` ([`split_think`]): that is the
///   reasoning, and the answer is [`final_answer`] of the rest of the reply, else that rest
///   trimmed (the visible reply is the answer);
/// - otherwise the reply is all there is: when [`final_answer`] finds an answer, the reasoning
///   is the whole reply (up to its `####` line, if that is where the answer was), as in a
///   MATH solution; when it finds none, a one-line reply is a bare answer (reasoning empty)
///   and a longer one is reasoning with no answer (answer empty).
pub fn split_response(reasoning: Option<&str>, content: &str) -> (String, String) {
    response_parts(reasoning, content, None)
}

/// [`split_response`], with `fallback` as the answer when the reply states none (the answer
/// field of a flat record that pairs a reasoning text with its answer).
fn response_parts(
    explicit: Option<&str>,
    content: &str,
    fallback: Option<&str>,
) -> (String, String) {
    let (think, rest) = split_think(content);
    let reasoning = explicit.map(|r| r.trim().to_string()).or(think);
    if let Some(reasoning) = reasoning {
        let answer = final_answer(&rest)
            .or_else(|| non_empty(&rest))
            .or_else(|| fallback.map(str::to_string))
            .unwrap_or_default();
        return (reasoning, answer);
    }
    let text = rest;
    match (locate_answer(&text), fallback) {
        (Some((answer, Some(cut))), _) => (text[..cut].trim_end().to_string(), answer),
        (Some((answer, None)), _) => (text, answer),
        (None, Some(fallback)) => (text, fallback.to_string()),
        (None, None) if text.contains('\n') => (text, String::new()),
        (None, None) => (String::new(), text),
    }
}

/// A reference answer field: `(as written, normalized)`, or `None` when it is empty.
///
/// The answer as written is the rest of the line after the last `####` (a GSM8K solution),
/// else the last `\boxed{}` (a MATH solution), else the whole text, trimmed. A plain number
/// (`1,600`, `$18`, `-3`, `2.50`) is normalized as the GSM8K reader does (`1600`, `18`, `-3`,
/// `2.5`); anything else is kept as written.
fn reference_answer(text: &str) -> Option<(String, String)> {
    let written = match text.rfind("####") {
        Some(at) => text[at + 4..].trim_start().lines().next().unwrap_or(""),
        None => last_boxed(text).unwrap_or(text),
    }
    .trim();
    if written.is_empty() {
        return None;
    }
    let gold = if is_plain_number(written) {
        Grader::Gsm8k.gold(written)
    } else {
        None
    };
    Some((
        written.to_string(),
        gold.unwrap_or_else(|| written.to_string()),
    ))
}

/// Whether `s` is one number and nothing else: an optional sign, an optional `$`, digits with
/// optional thousands groups of three (`1,600`), an optional fraction.
fn is_plain_number(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let s = s.strip_prefix('$').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let int_ok = match int.split_once(',') {
        None => int.is_empty() || digits(int),
        Some(_) => {
            let mut groups = int.split(',');
            let first = groups.next().unwrap_or("");
            digits(first) && first.len() <= 3 && groups.all(|g| g.len() == 3 && digits(g))
        }
    };
    let frac_ok = frac.is_none_or(digits);
    int_ok && frac_ok && (digits(int.split(',').next().unwrap_or("")) || frac.is_some())
}

/// Reads a JSONL file of problems or traces in any of the shapes in the [module
/// docs](self), with the field names of `fields`; blank lines are skipped.
///
/// Each line becomes one [`Trace`]:
///
/// - `question`, `system`: from the chat messages, or the [`FieldMap`]'s fields;
/// - `reasoning`, `answer`: the response split by [`split_response`]. A flat record whose text
///   states no final answer takes its answer field as written; a chat or DeepSeek reply never
///   does (its answer field is the reference, not what the model said). A line with no
///   response is a problem: empty reasoning, and the answer field as written (or empty);
/// - `gold`: the answer field (also `gold` while the default is in use), a string or a
///   number: the rest of the line after its last `####` (a GSM8K solution), else its last
///   `\boxed{}` (a MATH solution), else all of it; normalized like GSM8K's when it is a plain
///   number (`1,600` -> `1600`), else kept as written. "As written", this is also the answer
///   that the fallbacks above use;
/// - `id`: the [`FieldMap::id`] field, else `jsonl/<file stem>/<0-based index>`;
/// - `provenance`: `source` is `jsonl:<path>:<line>`, `model` the line's `model` field.
///
/// Every bad line is an error naming `file:line`: invalid JSON, not an object, no question
/// (naming the fields tried), a field of the wrong type, an empty question, a missing id
/// field, an id already used on an earlier line.
pub fn read_jsonl(path: &Path, fields: &FieldMap) -> Result<Vec<Trace>> {
    let stem = crate::datasets::file_stem(path);
    let lines = jsonl::read_lines(path)?;
    let mut traces = Vec::with_capacity(lines.len());
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        let value: Value = jsonl::parse_line(path, line)?;
        let trace = read_record(path, line.number, &value, fields)
            .map_err(|message| line_error(path, line.number, message))?;
        let trace = Trace {
            id: trace.id.unwrap_or_else(|| format!("jsonl/{stem}/{index}")),
            ..trace.trace
        };
        if let Some(first) = first_line.insert(trace.id.clone(), line.number) {
            return Err(line_error(
                path,
                line.number,
                format!("duplicate id `{}` (first on line {first})", trace.id),
            ));
        }
        traces.push(trace);
    }
    Ok(traces)
}

/// A trace read from one line, and its id when the line names one.
struct LineTrace {
    /// The id from [`FieldMap::id`], if set.
    id: Option<String>,
    /// The trace, with an empty id.
    trace: Trace,
}

/// A model's reply found on a line, before it is split.
struct Reply {
    /// An explicit reasoning text (`reasoning_content`).
    reasoning: Option<String>,
    /// The reply text.
    content: String,
    /// Whether the answer field may stand in for an answer the reply does not state.
    answer_fallback: bool,
}

/// Reads one parsed line (line `number` of `path`); errors are messages, which the caller
/// puts on `file:line`.
fn read_record(
    path: &Path,
    number: usize,
    value: &Value,
    fields: &FieldMap,
) -> std::result::Result<LineTrace, String> {
    let Some(object) = value.as_object() else {
        return Err(format!(
            "expected a JSON object, found {}",
            json_kind(value)
        ));
    };

    let chat_key = ["messages", "conversations"]
        .into_iter()
        .find(|key| lookup(object, key).is_some());
    let (question, mut system, reply) = match chat_key {
        Some(key) => read_chat(object, key)?,
        None => read_flat(object, fields)?,
    };
    if question.trim().is_empty() {
        return Err("empty question".into());
    }
    if system.is_none() {
        system = first_string(object, &fields.system_names())?.map(|(_, s)| s.to_string());
    }

    let reference = match first_field(object, &fields.answer_names()) {
        None => None,
        Some((_, Value::String(s))) => reference_answer(s),
        Some((_, Value::Number(n))) => reference_answer(&n.to_string()),
        Some((name, other)) => {
            return Err(format!(
                "field `{name}` (the answer) must be a string or a number, found {}",
                json_kind(other)
            ));
        }
    };
    let written = reference.as_ref().map(|(written, _)| written.as_str());
    let (reasoning, answer) = match &reply {
        Some(reply) => response_parts(
            reply.reasoning.as_deref(),
            &reply.content,
            written.filter(|_| reply.answer_fallback),
        ),
        None => (String::new(), written.unwrap_or_default().to_string()),
    };

    let id = match &fields.id {
        None => None,
        Some(name) => Some(match lookup(object, name) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(other) => {
                return Err(format!(
                    "field `{name}` (the id) must be a non-empty string or an integer, found {}",
                    describe(other)
                ));
            }
            None => return Err(format!("missing field `{name}` (the id)")),
        }),
    };
    let model = string_field(object, "model")?.map(str::to_string);

    Ok(LineTrace {
        id,
        trace: Trace {
            schema: SCHEMA_VERSION,
            id: String::new(),
            system,
            question,
            reasoning,
            answer,
            gold: reference.map(|(_, gold)| gold),
            ratio: None,
            provenance: Some(Provenance {
                source: format!("jsonl:{}:{number}", path.display()),
                model,
                ..Provenance::default()
            }),
        },
    })
}

/// The question, system prompt and reply of a flat or DeepSeek-style record.
type Parts = (String, Option<String>, Option<Reply>);

/// Reads a flat record (shape 3) or a DeepSeek-style one (shape 2).
fn read_flat(object: &Map<String, Value>, fields: &FieldMap) -> std::result::Result<Parts, String> {
    let names = fields.question_names();
    let Some((_, question)) = first_string(object, &names)? else {
        return Err(format!(
            "no question: expected a string field {}, or a `messages` array",
            list_names(&names)
        ));
    };
    let reply = if let Some(name) = &fields.reasoning {
        let Some(text) = string_field(object, name)? else {
            return Err(format!("missing field `{name}` (the reasoning)"));
        };
        Some(Reply {
            reasoning: None,
            content: text.to_string(),
            answer_fallback: true,
        })
    } else if let Some(reasoning) = string_field(object, REASONING_NAMES[0])? {
        let content = string_field(object, "content")?.unwrap_or_default();
        Some(Reply {
            reasoning: Some(reasoning.to_string()),
            content: content.to_string(),
            answer_fallback: false,
        })
    } else {
        first_string(object, &RESPONSE_NAMES)?.map(|(_, text)| Reply {
            reasoning: None,
            content: text.to_string(),
            answer_fallback: true,
        })
    };
    Ok((question.to_string(), None, reply))
}

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `system` or `developer`.
    System,
    /// `user` or `human`.
    User,
    /// `assistant`, `gpt` or `model`.
    Assistant,
    /// Anything else (`tool`, `function`): skipped.
    Other,
}

/// One chat message, its content parts joined.
struct Message {
    /// The role.
    role: Role,
    /// The text parts, joined with newlines.
    text: String,
    /// `reasoning_content` or `reasoning`, or `thinking` parts.
    reasoning: Option<String>,
}

/// Reads a chat record (shape 1) whose messages are under `key`.
fn read_chat(object: &Map<String, Value>, key: &str) -> std::result::Result<Parts, String> {
    let Some(Value::Array(items)) = lookup(object, key) else {
        let found = lookup(object, key).map_or("nothing", json_kind);
        return Err(format!(
            "`{key}` must be an array of messages, found {found}"
        ));
    };
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_message(item).map_err(|e| format!("`{key}[{i}]`: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
    let before = &messages[..last_assistant.unwrap_or(messages.len())];
    let Some(asked) = before.iter().rposition(|m| m.role == Role::User) else {
        return Err(match last_assistant {
            Some(_) => {
                format!("no question: no user message before the last assistant message in `{key}`")
            }
            None => format!("no question: no user message in `{key}`"),
        });
    };
    let system: Vec<&str> = before[..asked]
        .iter()
        .filter(|m| m.role == Role::System && !m.text.trim().is_empty())
        .map(|m| m.text.trim())
        .collect();
    let reply = last_assistant.map(|at| Reply {
        reasoning: messages[at].reasoning.clone(),
        content: messages[at].text.clone(),
        answer_fallback: false,
    });
    Ok((
        before[asked].text.clone(),
        (!system.is_empty()).then(|| system.join("\n\n")),
        reply,
    ))
}

/// Reads one chat message: `role` (or `from`), `content` (or `value`: a string, an array of
/// parts, or null), and `reasoning_content` / `reasoning`.
fn read_message(item: &Value) -> std::result::Result<Message, String> {
    let Some(message) = item.as_object() else {
        return Err(format!(
            "expected a message object, found {}",
            json_kind(item)
        ));
    };
    let Some((_, role)) = first_string(message, &["role", "from"])? else {
        return Err("a message needs a `role` (or `from`)".into());
    };
    let role = match role.to_ascii_lowercase().as_str() {
        "system" | "developer" => Role::System,
        "user" | "human" => Role::User,
        "assistant" | "gpt" | "model" => Role::Assistant,
        _ => Role::Other,
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut thinking: Vec<&str> = Vec::new();
    match first_field(message, &["content", "value"]) {
        None => {}
        Some((_, Value::String(s))) => texts.push(s),
        Some((name, Value::Array(parts))) => {
            for (i, part) in parts.iter().enumerate() {
                match part {
                    Value::String(s) => texts.push(s),
                    Value::Object(part) => {
                        let kind = string_field(part, "type")?;
                        if kind == Some("thinking") {
                            thinking.extend(string_field(part, "thinking")?);
                        } else if kind.is_none_or(|k| k.ends_with("text")) {
                            texts.extend(string_field(part, "text")?);
                        }
                    }
                    other => {
                        return Err(format!(
                            "`{name}[{i}]` must be a string or a part object, found {}",
                            json_kind(other)
                        ));
                    }
                }
            }
        }
        Some((name, other)) => {
            return Err(format!(
                "`{name}` must be a string or an array of parts, found {}",
                json_kind(other)
            ));
        }
    }
    let reasoning = match first_string(message, &REASONING_NAMES)? {
        Some((_, r)) => Some(r.to_string()),
        None => (!thinking.is_empty()).then(|| thinking.join("\n")),
    };
    Ok(Message {
        role,
        text: texts.join("\n"),
        reasoning,
    })
}

/// The value at `name`: the key itself, else a dotted path (`a.b`, `a.0.b`) through objects
/// and arrays. `null` counts as absent.
fn lookup<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let found = match object.get(name) {
        Some(value) => value,
        None if name.contains('.') => {
            let mut segments = name.split('.');
            let mut current = object.get(segments.next()?)?;
            for segment in segments {
                current = match current {
                    Value::Object(map) => map.get(segment)?,
                    Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            current
        }
        None => return None,
    };
    (!found.is_null()).then_some(found)
}

/// The first of `names` present, with its value.
fn first_field<'a, 'n>(
    object: &'a Map<String, Value>,
    names: &[&'n str],
) -> Option<(&'n str, &'a Value)> {
    names
        .iter()
        .find_map(|&name| lookup(object, name).map(|value| (name, value)))
}

/// The first of `names` present, which must be a string.
fn first_string<'a, 'n>(
    object: &'a Map<String, Value>,
    names: &[&'n str],
) -> std::result::Result<Option<(&'n str, &'a str)>, String> {
    match first_field(object, names) {
        None => Ok(None),
        Some((name, Value::String(s))) => Ok(Some((name, s))),
        Some((name, other)) => Err(format!(
            "field `{name}` must be a string, found {}",
            json_kind(other)
        )),
    }
}

/// The string at `name`, `None` when absent; an error naming the field for another type.
fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> std::result::Result<Option<&'a str>, String> {
    first_string(object, &[name]).map(|found| found.map(|(_, s)| s))
}

/// A value's kind for messages, with the value when it is short (`the number 1.5`).
fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.trim().is_empty() => "an empty string".into(),
        other => json_kind(other).into(),
    }
}

/// Field names for a message: "`a`", "`a` or `b`", "`a`, `b` or `c`".
fn list_names(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn think_with_both_tags() {
        let (reasoning, rest) = split_think("<think>\n3 + 2 = 5.\n</think>\n\nThe answer is 5.");
        assert_eq!(reasoning.as_deref(), Some("3 + 2 = 5."));
        assert_eq!(rest, "The answer is 5.");
    }

    #[test]
    fn think_without_the_opening_tag() {
        // DeepSeek-R1's template opens `<think>` in the prompt.
        let (reasoning, rest) = split_think("Okay, 3 + 2 = 5.\n</think>\n\n**5**");
        assert_eq!(reasoning.as_deref(), Some("Okay, 3 + 2 = 5."));
        assert_eq!(rest, "**5**");
    }

    #[test]
    fn think_unterminated_and_absent_and_empty() {
        let (reasoning, rest) = split_think("<think>\nLet me see, 3 + 2 is");
        assert_eq!(reasoning.as_deref(), Some("Let me see, 3 + 2 is"));
        assert_eq!(rest, "");

        let (reasoning, rest) = split_think("  The answer is 5.\n");
        assert_eq!(reasoning, None);
        assert_eq!(rest, "The answer is 5.");

        // Qwen3's non-thinking mode writes an empty block.
        let (reasoning, rest) = split_think("<think>\n\n</think>\n\n5");
        assert_eq!(reasoning.as_deref(), Some(""));
        assert_eq!(rest, "5");

        // Text before `<think>` stays in the rest; the first `</think>` ends the reasoning.
        let (reasoning, rest) = split_think("Sure.<think>a</think>b</think>c");
        assert_eq!(reasoning.as_deref(), Some("a"));
        assert_eq!(rest, "Sure.\n\nb</think>c");
    }

    #[test]
    fn final_answer_rules_in_order() {
        assert_eq!(
            final_answer("So $x = \\boxed{\\frac{9}{2}}$. The answer is 4.").as_deref(),
            Some("\\frac{9}{2}")
        );
        assert_eq!(
            final_answer("\\boxed{\\{1, 2\\}} and \\boxed{3").as_deref(),
            Some("\\{1, 2\\}")
        );
        assert_eq!(
            final_answer("2*800=1600\n#### 1,600\n").as_deref(),
            Some("1,600")
        );
        // A `####` Markdown heading in the middle is not an answer line.
        assert_eq!(
            final_answer("#### Step 1\nadd\n#### Step 2\nThe answer is 7.").as_deref(),
            Some("7")
        );
        assert_eq!(
            final_answer("**Final Answer:** **18**").as_deref(),
            Some("18")
        );
        assert_eq!(
            final_answer("The final answer is $\\$18.90$. I hope it is correct.").as_deref(),
            Some("\\$18.90")
        );
        assert_eq!(
            final_answer("So the answer is 12. Done.").as_deref(),
            Some("12")
        );
        assert_eq!(final_answer("She has 5 apples."), None);
    }

    #[test]
    fn replies_split_into_reasoning_and_answer() {
        // An explicit reasoning text: the reply is the answer.
        assert_eq!(
            split_response(Some(" 3 + 2 = 5. "), "5 apples"),
            ("3 + 2 = 5.".to_string(), "5 apples".to_string())
        );
        // A `<think>` part, and a boxed answer after it.
        assert_eq!(
            split_response(None, "3 + 2 = 5\n</think>\nShe has $\\boxed{5}$ apples."),
            ("3 + 2 = 5".to_string(), "5".to_string())
        );
        // No separate reasoning: the whole reply is the reasoning, up to a `####` line.
        assert_eq!(
            split_response(None, "3 + 2 = 5\n#### 5"),
            ("3 + 2 = 5".to_string(), "5".to_string())
        );
        assert_eq!(
            split_response(None, "3 + 2 = 5, so the answer is 5."),
            (
                "3 + 2 = 5, so the answer is 5.".to_string(),
                "5".to_string()
            )
        );
        // No answer stated: one line is a bare answer, several lines are reasoning.
        assert_eq!(
            split_response(None, "Paris"),
            (String::new(), "Paris".to_string())
        );
        assert_eq!(
            split_response(None, "3 + 2 = 5\nShe has 5 apples."),
            ("3 + 2 = 5\nShe has 5 apples.".to_string(), String::new())
        );
        // A fallback answer stands in only when the reply states none.
        assert_eq!(
            response_parts(None, "3 + 2 = 5", Some("5")),
            ("3 + 2 = 5".to_string(), "5".to_string())
        );
        assert_eq!(response_parts(None, "The answer is 6.", Some("5")).1, "6");
    }

    #[test]
    fn reference_answers_are_normalized_when_numeric() {
        let pair = reference_answer;
        assert_eq!(pair("1,600"), Some(("1,600".into(), "1600".into())));
        assert_eq!(pair(" $18.50 "), Some(("$18.50".into(), "18.5".into())));
        assert_eq!(pair("-3"), Some(("-3".into(), "-3".into())));
        assert_eq!(
            pair("She sold 72 clips.\n#### 72"),
            Some(("72".into(), "72".into()))
        );
        assert_eq!(
            pair("It is $\\boxed{\\frac{9}{2}}$."),
            Some(("\\frac{9}{2}".into(), "\\frac{9}{2}".into()))
        );
        // Not plain numbers: kept as written (`3/4` must not become `3`).
        assert_eq!(pair("3/4"), Some(("3/4".into(), "3/4".into())));
        assert_eq!(pair("1,2"), Some(("1,2".into(), "1,2".into())));
        assert_eq!(pair("  "), None);
    }

    #[test]
    fn plain_numbers() {
        for yes in [
            "18",
            "-3",
            "+2",
            "1,600",
            "1,450,000",
            "2.50",
            ".5",
            "$18",
            "-$5",
        ] {
            assert!(is_plain_number(yes), "{yes}");
        }
        for no in [
            "", "-", "$", "1,2", "12,34", "1.2.3", "3/4", "x", "5 apples", "1,6000",
        ] {
            assert!(!is_plain_number(no), "{no}");
        }
    }

    #[test]
    fn dotted_paths_reach_into_objects_and_arrays() {
        let value = json!({
            "a.b": "literal",
            "a": {"b": "nested", "n": null},
            "choices": [{"message": {"content": "hi"}}]
        });
        let object = value.as_object().expect("object");
        assert_eq!(lookup(object, "a.b"), Some(&json!("literal")));
        assert_eq!(
            lookup(object, "choices.0.message.content"),
            Some(&json!("hi"))
        );
        assert_eq!(lookup(object, "choices.1.message"), None);
        assert_eq!(lookup(object, "a.n"), None);
        assert_eq!(lookup(object, "a.b.c"), None);
    }

    #[test]
    fn names_are_listed_for_messages() {
        assert_eq!(list_names(&["q"]), "`q`");
        assert_eq!(list_names(&["a", "b"]), "`a` or `b`");
        assert_eq!(
            list_names(&QUESTION_NAMES),
            "`question`, `problem` or `prompt`"
        );
    }

    #[test]
    fn field_map_defaults_try_the_usual_names() {
        let fields = FieldMap::default();
        assert_eq!(
            fields.question_names(),
            vec!["question", "problem", "prompt"]
        );
        assert_eq!(fields.answer_names(), vec!["answer", "gold"]);
        let custom = FieldMap {
            question: "input".into(),
            answer: "target".into(),
            ..FieldMap::default()
        };
        assert_eq!(custom.question_names(), vec!["input"]);
        assert_eq!(custom.answer_names(), vec!["target"]);
    }

    #[test]
    fn chat_messages_with_parts_and_reasoning() {
        let value = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 3 + 2?"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "5", "reasoning_content": "3 + 2 = 5."}
        ]});
        let object = value.as_object().expect("object");
        let (question, system, reply) = read_chat(object, "messages").expect("chat");
        assert_eq!(question, "What is 3 + 2?");
        assert_eq!(system.as_deref(), Some("Be brief."));
        let reply = reply.expect("reply");
        assert_eq!(reply.reasoning.as_deref(), Some("3 + 2 = 5."));
        assert_eq!(reply.content, "5");
    }

    #[test]
    fn thinking_parts_are_reasoning() {
        let message = json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "3 + 2 = 5."},
            {"type": "text", "text": "5"}
        ]});
        let message = read_message(&message).expect("message");
        assert_eq!(message.role, Role::Assistant);
        assert_eq!(message.reasoning.as_deref(), Some("3 + 2 = 5."));
        assert_eq!(message.text, "5");
    }

    #[test]
    fn bad_messages_say_what_was_expected() {
        let message = read_message(&json!("hi")).err().expect("not an object");
        assert_eq!(message, "expected a message object, found a string");
        let message = read_message(&json!({"content": "hi"}))
            .err()
            .expect("no role");
        assert!(message.contains("`role`"), "{message}");
        let message = read_message(&json!({"role": "user", "content": 5}))
            .err()
            .expect("bad content");
        assert_eq!(
            message,
            "`content` must be a string or an array of parts, found a number"
        );
    }
}
