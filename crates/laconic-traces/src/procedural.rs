//! A procedural stand-in for a reasoning dataset and a reasoning teacher.
//!
//! No large reasoning model runs on a small CPU machine, yet the pipeline (distill, label,
//! train, evaluate) needs problems with gold answers and long, correct-but-wordy traces to
//! compress. This module makes both, procedurally. **Nothing here comes from a real dataset
//! or a real model**: every problem says so in its provenance (`teacher: "procedural"`), and
//! every sample of the teacher names itself (`procedural:verbose`, model
//! `procedural-verbose (stand-in teacher)`). The rest of the pipeline is the same code that
//! runs on real traces.
//!
//! - [`generate_problems`]: seeded multi-step arithmetic word problems about one person and
//!   one kind of item ("Mia has 12 apples. She buys 3 bags with 4 apples in each. ..."), from a
//!   fixed set of templates, names and items. [`ProblemConfig::difficulty`] 1..=5 gives 2..=6
//!   arithmetic operations and wider value ranges; with [`ProblemConfig::distractors`] each
//!   problem also states facts that do not matter ("Leo has 9 pears."). Every intermediate
//!   value is a non-negative integer below 1000 (divisions are exact). Each problem's
//!   `reasoning` is a short GSM8K-style solution (one equation per line), so the problems can
//!   also be trained on directly.
//! - [`parse_problem`]: reads such a problem back from its text alone (a small matcher over
//!   the same templates), so that a teacher needs nothing hidden.
//! - [`ProceduralTeacher`] (`procedural:verbose`): answers a problem in the style of
//!   DeepSeek-R1: `<think>` with the question restated, every step spelled out, re-checks
//!   ("Wait, let me double-check that."), hedges, sometimes an arithmetic slip that it
//!   catches, a recap, then `</think>`, one sentence, and `#### N`. The sample's seed decides
//!   how wordy it is, so K samples of a problem differ in length and "shortest correct" means
//!   something; about one sample in eight ([`WRONG_SHARE`]) carries a slip it does not
//!   catch and ends with a wrong answer, so grading and rejection are exercised too.
//!
//! Randomness comes from SplitMix64, written here, not from `rand`: `rand`'s `StdRng` may
//! change its algorithm between versions, and the problems of a seed (a held-out set among
//! them) must stay the same across builds. Problem `i` depends only on the seed, the
//! difficulty and `i`, so `count=1000` is the first thousand problems of `count=2000`; and the
//! distractors come from a stream of their own, so `distractors=false` gives the same problems
//! without them.

use std::fmt;

use crate::error::{Result, TraceError};
use crate::schema::{Provenance, SCHEMA_VERSION, Trace};
use crate::teacher::{SampleRequest, Teacher, TeacherSample};

// ---------------------------------------------------------------------------------------------
// Randomness

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and the same on every platform and
/// every build.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`); the multiply-shift bias is below 2^-50 for
    /// the small ranges used here.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = u128::from(hi - lo) + 1;
        lo + ((u128::from(self.next_u64()) * span) >> 64) as u64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.range(0, n as u64 - 1) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A seed from several numbers (each fed through SplitMix64's mixer).
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x6c61_636f_6e69_6321_u64; // "laconic!"
    for &p in parts {
        h = Rng::new(h ^ p).next_u64();
    }
    h
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// What [`generate_problems`] makes; also the options of the dataset spec
/// `procedural:count=N,seed=S,difficulty=D,distractors=true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemConfig {
    /// How many problems.
    pub count: usize,
    /// The seed; problem `i` of a seed is always the same problem.
    pub seed: u64,
    /// 1..=5: `difficulty + 1` arithmetic operations (2..=6) and wider value ranges.
    pub difficulty: u8,
    /// Whether problems also state facts that do not matter to the answer.
    pub distractors: bool,
}

impl Default for ProblemConfig {
    /// 1000 problems, seed 0, difficulty 2 (three operations), with distractors.
    fn default() -> Self {
        Self {
            count: 1000,
            seed: 0,
            difficulty: 2,
            distractors: true,
        }
    }
}

/// The keys [`ProblemConfig::parse`] reads, for messages.
const KEYS: &str = "count, seed, difficulty, distractors";

impl ProblemConfig {
    /// Reads `key=value` pairs separated by commas (`count=1000,seed=7,difficulty=3`); every
    /// key is optional ([`ProblemConfig::default`] fills the rest) and an empty string is the
    /// default. `count` is at least 1, `difficulty` 1..=5, `distractors` `true`/`false` (also
    /// `yes`/`no`, `1`/`0`). An unknown key, a repeated key, or a bad value is an error that
    /// names the key.
    pub fn parse(options: &str) -> std::result::Result<Self, String> {
        let mut config = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for part in options.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("expected key=value, found `{part}` (keys: {KEYS})"));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(format!("`{key}` is given twice"));
            }
            seen.push(key);
            let bad = |what: &str| format!("`{key}` must be {what}, found `{value}`");
            match key {
                "count" => {
                    config.count = value
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n >= 1)
                        .ok_or_else(|| bad("a whole number of at least 1"))?;
                }
                "seed" => {
                    config.seed = value
                        .parse()
                        .map_err(|_| bad("a non-negative whole number"))?;
                }
                "difficulty" => {
                    config.difficulty = value
                        .parse()
                        .ok()
                        .filter(|d: &u8| (1..=5).contains(d))
                        .ok_or_else(|| bad("1, 2, 3, 4 or 5"))?;
                }
                "distractors" => {
                    config.distractors = match value.to_ascii_lowercase().as_str() {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(bad("true or false")),
                    };
                }
                _ => return Err(format!("unknown key `{key}` (keys: {KEYS})")),
            }
        }
        Ok(config)
    }

    /// Arithmetic operations per problem: `difficulty + 1`.
    pub fn operations(&self) -> usize {
        usize::from(self.difficulty.clamp(1, 5)) + 1
    }
}

impl fmt::Display for ProblemConfig {
    /// All four keys, in the form [`ProblemConfig::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "count={},seed={},difficulty={},distractors={}",
            self.count, self.seed, self.difficulty, self.distractors
        )
    }
}

/// Value ranges of one difficulty.
struct Ranges {
    start: (u64, u64),
    operand: u64,
    factor: u64,
    groups: u64,
    each: u64,
    price: u64,
    bound: u64,
}

/// The hard ceiling of every value in a problem (so numbers stay short).
const MAX_VALUE: u64 = 999;

fn ranges(difficulty: u8) -> Ranges {
    let d = u64::from(difficulty.clamp(1, 5));
    Ranges {
        start: (4 + d, 10 + 10 * d),
        operand: 5 + 5 * d,
        factor: 2 + d.div_ceil(2),
        groups: 3 + d,
        each: 2 + 2 * d,
        price: 2 + d,
        bound: (60 + 90 * d).min(MAX_VALUE),
    }
}

// ---------------------------------------------------------------------------------------------
// Problems

/// He or she (the protagonist of a problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pronoun {
    /// he, him, his, himself.
    He,
    /// she, her, her, herself.
    She,
}

impl Pronoun {
    /// The form a template slot asks for (`He`, `he`, `him`, `his`, `His`, `himself`).
    fn form(self, slot: &str) -> &'static str {
        let he = self == Self::He;
        match slot {
            "He" => ["She", "He"][usize::from(he)],
            "he" => ["she", "he"][usize::from(he)],
            "him" => ["her", "him"][usize::from(he)],
            "his" => ["her", "his"][usize::from(he)],
            "His" => ["Her", "His"][usize::from(he)],
            _ => ["herself", "himself"][usize::from(he)],
        }
    }

    /// The pronoun a slot's value is a form of.
    fn of(slot: &str, value: &str) -> Option<Self> {
        [Self::He, Self::She]
            .into_iter()
            .find(|p| p.form(slot) == value)
    }
}

/// One arithmetic change to the protagonist's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Gets `n` more.
    Add(u64),
    /// Gives away or loses `n`.
    Subtract(u64),
    /// Ends up with `n` times as many.
    Multiply(u64),
    /// Splits them into `n` equal parts and keeps one (always exact).
    Divide(u64),
    /// Gets `groups` groups of `each` (two computations: `groups * each`, then the sum).
    AddGroups {
        /// Number of groups.
        groups: u64,
        /// Items per group.
        each: u64,
    },
    /// Gives away `groups` groups of `each` (two computations).
    SubtractGroups {
        /// Number of groups.
        groups: u64,
        /// Items per group.
        each: u64,
    },
    /// Sells them all at `price` dollars each; the answer is then in dollars (last only).
    Sell {
        /// Dollars per item.
        price: u64,
    },
}

impl Operation {
    /// How many computations (`a op b = c` lines) it takes: 2 for the group operations, else 1.
    pub fn computations(&self) -> usize {
        match self {
            Self::AddGroups { .. } | Self::SubtractGroups { .. } => 2,
            _ => 1,
        }
    }

    /// The total after the operation, or `None` when it would be negative, inexact or above
    /// [`MAX_VALUE`].
    pub fn apply(&self, total: u64) -> Option<u64> {
        let r = match *self {
            Self::Add(n) => total.checked_add(n)?,
            Self::Subtract(n) => total.checked_sub(n)?,
            Self::Multiply(n) | Self::Sell { price: n } => total.checked_mul(n)?,
            Self::Divide(n) => (n > 0 && total.is_multiple_of(n)).then(|| total / n)?,
            Self::AddGroups { groups, each } => total.checked_add(groups.checked_mul(each)?)?,
            Self::SubtractGroups { groups, each } => {
                total.checked_sub(groups.checked_mul(each)?)?
            }
        };
        (r <= MAX_VALUE).then_some(r)
    }
}

/// One sentence of a problem that changes the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub operation: Operation,
    /// The sentence as the question states it.
    pub sentence: String,
}

/// One line of arithmetic: `left op right = result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Computation {
    /// The step it belongs to (index into [`Problem::steps`]).
    pub step: usize,
    /// Left operand.
    pub left: u64,
    /// `+`, `-`, `*` or `/`.
    pub op: char,
    /// Right operand.
    pub right: u64,
    /// The result as written (wrong in a sample with a slip).
    pub result: u64,
}

impl fmt::Display for Computation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} = {}",
            self.left, self.op, self.right, self.result
        )
    }
}

/// A generated problem, in structure: what [`generate_problem`] makes and [`parse_problem`]
/// reads back from the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The whole question.
    pub question: String,
    /// The protagonist (`Mia`).
    pub name: String,
    /// Their pronoun.
    pub pronoun: Pronoun,
    /// The items, plural (`apples`).
    pub items: String,
    /// How many items they start with.
    pub start: u64,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// Sentences that do not matter to the answer, in order.
    pub distractors: Vec<String>,
}

impl Problem {
    /// Whether the answer is in dollars (the last step sells everything).
    pub fn asks_money(&self) -> bool {
        matches!(
            self.steps.last().map(|s| s.operation),
            Some(Operation::Sell { .. })
        )
    }

    /// Every computation of the solution, in order; `None` if the problem is not solvable in
    /// non-negative integers up to 999 (never for a generated one).
    pub fn computations(&self) -> Option<Vec<Computation>> {
        self.computations_with(None)
    }

    /// The answer.
    pub fn answer(&self) -> Option<u64> {
        let c = self.computations()?;
        c.last().map(|c| c.result).or(Some(self.start))
    }

    /// The computations when the result of computation `slip.0` is written `slip.1` off and
    /// the rest goes on from it (as a person who made the slip would). `None` when that makes
    /// a value negative or a division inexact.
    fn computations_with(&self, slip: Option<(usize, i64)>) -> Option<Vec<Computation>> {
        let mut out: Vec<Computation> = Vec::new();
        let mut emit = |step: usize, left: u64, op: char, right: u64| -> Option<u64> {
            let exact = match op {
                '+' => left.checked_add(right)?,
                '-' => left.checked_sub(right)?,
                '*' => left.checked_mul(right)?,
                _ => (right > 0 && left.is_multiple_of(right)).then(|| left / right)?,
            };
            let result = match slip {
                Some((at, delta)) if at == out.len() => {
                    u64::try_from(i64::try_from(exact).ok()?.checked_add(delta)?).ok()?
                }
                _ => exact,
            };
            out.push(Computation {
                step,
                left,
                op,
                right,
                result,
            });
            Some(result)
        };
        let mut total = self.start;
        for (i, s) in self.steps.iter().enumerate() {
            total = match s.operation {
                Operation::Add(n) => emit(i, total, '+', n)?,
                Operation::Subtract(n) => emit(i, total, '-', n)?,
                Operation::Multiply(n) | Operation::Sell { price: n } => emit(i, total, '*', n)?,
                Operation::Divide(n) => emit(i, total, '/', n)?,
                Operation::AddGroups { groups, each } => {
                    let x = emit(i, groups, '*', each)?;
                    emit(i, total, '+', x)?
                }
                Operation::SubtractGroups { groups, each } => {
                    let x = emit(i, groups, '*', each)?;
                    emit(i, total, '-', x)?
                }
            };
        }
        Some(out)
    }

    /// A short, human-style solution: one line per step with its equations, as GSM8K's
    /// solutions read (without the `#### answer` line).
    pub fn reasoning(&self) -> Option<String> {
        let comps = self.computations()?;
        let p = self.pronoun;
        let (he, he_cap) = (p.form("he"), p.form("He"));
        let items = &self.items;
        let mut lines = Vec::new();
        let mut k = 0;
        for s in &self.steps {
            let c = comps[k];
            let line = match s.operation {
                Operation::Add(_) => format!("{he_cap} has {c} {items}."),
                Operation::Subtract(_) => format!("{he_cap} has {c} {items} left."),
                Operation::Multiply(_) => format!("{he_cap} has {c} {items}."),
                Operation::Divide(_) => format!("{he_cap} keeps {c} {items}."),
                Operation::Sell { .. } => format!("{he_cap} makes {c} dollars."),
                Operation::AddGroups { .. } => {
                    let d = comps[k + 1];
                    format!("{he_cap} gets {c} {items}, so {he} has {d} {items}.")
                }
                Operation::SubtractGroups { .. } => {
                    let d = comps[k + 1];
                    format!("{he_cap} gives away {c} {items}, so {he} has {d} {items} left.")
                }
            };
            k += s.operation.computations();
            lines.push(line);
        }
        Some(lines.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Templates
//
// Slots: `{Name}` the protagonist, `{Other}` someone else (capitalized words); `{He}`, `{he}`,
// `{him}`, `{his}`, `{His}`, `{himself}` the protagonist's pronoun; `{items}`, `{item}`,
// `{containers}`, `{container}`, `{other_items}` one lowercase word each; `{n}`, `{m}` whole
// numbers. No template holds a `.` or `?` except at its end, so sentences split cleanly.

const NAMES: &[(&str, Pronoun)] = &[
    ("Mia", Pronoun::She),
    ("Emma", Pronoun::She),
    ("Lily", Pronoun::She),
    ("Ava", Pronoun::She),
    ("Zoe", Pronoun::She),
    ("Nora", Pronoun::She),
    ("Ella", Pronoun::She),
    ("Ruby", Pronoun::She),
    ("Maya", Pronoun::She),
    ("Sara", Pronoun::She),
    ("Leo", Pronoun::He),
    ("Sam", Pronoun::He),
    ("Max", Pronoun::He),
    ("Ben", Pronoun::He),
    ("Omar", Pronoun::He),
    ("Jack", Pronoun::He),
    ("Noah", Pronoun::He),
    ("Liam", Pronoun::He),
    ("Owen", Pronoun::He),
    ("Ravi", Pronoun::He),
];

/// (item, items, container, containers).
const ITEMS: &[(&str, &str, &str, &str)] = &[
    ("apple", "apples", "bag", "bags"),
    ("marble", "marbles", "jar", "jars"),
    ("sticker", "stickers", "sheet", "sheets"),
    ("cookie", "cookies", "box", "boxes"),
    ("pencil", "pencils", "pack", "packs"),
    ("egg", "eggs", "carton", "cartons"),
    ("shell", "shells", "bucket", "buckets"),
    ("card", "cards", "pack", "packs"),
    ("bead", "beads", "bag", "bags"),
    ("muffin", "muffins", "tray", "trays"),
    ("crayon", "crayons", "box", "boxes"),
    ("orange", "oranges", "crate", "crates"),
    ("stamp", "stamps", "album", "albums"),
    ("candle", "candles", "box", "boxes"),
];

const START: &[&str] = &[
    "{Name} has {n} {items}.",
    "{Name} starts with {n} {items}.",
    "{Name} has a collection of {n} {items}.",
];

const ADD: &[&str] = &[
    "{He} buys {n} more {items}.",
    "{Other} gives {him} {n} {items}.",
    "{He} finds {n} more {items}.",
    "Then {he} gets {n} {items} as a gift.",
];

const SUBTRACT: &[&str] = &[
    "{He} gives {n} {items} to {Other}.",
    "{He} loses {n} {items}.",
    "{He} uses {n} of the {items}.",
    "Then {he} sells {n} {items} at the market.",
];

const MULTIPLY: &[&str] = &[
    "Then the number of {items} {he} has becomes {n} times as large.",
    "{He} gets enough new {items} to have {n} times as many as before.",
];

const DIVIDE: &[&str] = &[
    "{He} splits the {items} equally into {n} {containers} and keeps one {container}.",
    "{He} shares the {items} equally among {n} people, {himself} included, and keeps {his} share.",
];

const ADD_GROUPS: &[&str] = &[
    "{He} buys {n} {containers} with {m} {items} in each.",
    "{Other} gives {him} {n} {containers} of {items}, with {m} {items} in each {container}.",
];

const SUBTRACT_GROUPS: &[&str] = &[
    "{He} gives {n} friends {m} {items} each.",
    "{He} fills {n} {containers} with {m} {items} each and gives them away.",
];

const SELL: &[&str] = &[
    "{He} sells all of the {items} for {n} dollars each.",
    "In the end, {he} sells every one of the {items} for {n} dollars apiece.",
];

const DISTRACTORS: &[&str] = &[
    "{Other} has {n} {other_items}.",
    "{Name} is {n} years old.",
    "Each {item} weighs {n} grams.",
    "The store is {n} minutes from {his} home.",
    "{His} friend {Other} has {n} {items}.",
];

const ASK_ITEMS: &[&str] = &[
    "How many {items} does {Name} have now?",
    "How many {items} does {Name} have at the end?",
    "How many {items} does {Name} end up with?",
];

const ASK_MONEY: &[&str] = &[
    "How many dollars does {Name} make?",
    "How much money, in dollars, does {Name} get from the sale?",
];

/// The templates of an operation's kind.
fn templates_of(op: &Operation) -> &'static [&'static str] {
    match op {
        Operation::Add(_) => ADD,
        Operation::Subtract(_) => SUBTRACT,
        Operation::Multiply(_) => MULTIPLY,
        Operation::Divide(_) => DIVIDE,
        Operation::AddGroups { .. } => ADD_GROUPS,
        Operation::SubtractGroups { .. } => SUBTRACT_GROUPS,
        Operation::Sell { .. } => SELL,
    }
}

/// Values for the slots of a template.
struct Slots<'a> {
    name: &'a str,
    pronoun: Pronoun,
    item: (&'a str, &'a str, &'a str, &'a str),
    other: &'a str,
    other_items: &'a str,
    n: u64,
    m: u64,
}

/// A template with its slots filled.
fn fill(template: &str, s: &Slots<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').unwrap_or(rest.len() - open - 1);
        let slot = &rest[open + 1..close];
        match slot {
            "Name" => out.push_str(s.name),
            "Other" => out.push_str(s.other),
            "He" | "he" | "him" | "his" | "His" | "himself" => out.push_str(s.pronoun.form(slot)),
            "item" => out.push_str(s.item.0),
            "items" => out.push_str(s.item.1),
            "container" => out.push_str(s.item.2),
            "containers" => out.push_str(s.item.3),
            "other_items" => out.push_str(s.other_items),
            "n" => out.push_str(&s.n.to_string()),
            "m" => out.push_str(&s.m.to_string()),
            _ => out.push_str(&rest[open..=close]),
        }
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Whether `value` may fill `slot`. Every check is closed under prefixes, so a matcher can
/// stop extending a slot once a prefix fails.
fn slot_accepts(slot: &str, value: &str) -> bool {
    match slot {
        "n" | "m" => value.bytes().all(|b| b.is_ascii_digit()),
        "Name" | "Other" => {
            let mut chars = value.chars();
            chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_lowercase())
        }
        "He" | "he" | "him" | "his" | "His" | "himself" => [Pronoun::He, Pronoun::She]
            .iter()
            .any(|p| p.form(slot).starts_with(value)),
        _ => value.bytes().all(|b| b.is_ascii_lowercase()),
    }
}

/// Matches `text` against `template`, returning each slot's value; a slot that appears twice
/// must have the same value both times.
fn match_template<'t>(template: &str, text: &'t str) -> Option<Vec<(String, &'t str)>> {
    enum Piece<'a> {
        Literal(&'a str),
        Slot(&'a str),
    }
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        pieces.push(Piece::Slot(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }

    fn go<'t>(pieces: &[Piece<'_>], text: &'t str, caps: &mut Vec<(String, &'t str)>) -> bool {
        let Some((first, rest)) = pieces.split_first() else {
            return text.is_empty();
        };
        match first {
            Piece::Literal(l) => text.strip_prefix(l).is_some_and(|t| go(rest, t, caps)),
            Piece::Slot(slot) => {
                for (end, _) in text.char_indices().skip(1).chain([(text.len(), ' ')]) {
                    let value = &text[..end];
                    if !slot_accepts(slot, value) {
                        break;
                    }
                    if caps.iter().any(|(s, v)| s == slot && *v != value) {
                        continue;
                    }
                    let pushed = !caps.iter().any(|(s, _)| s == slot);
                    if pushed {
                        caps.push((slot.to_string(), value));
                    }
                    if go(rest, &text[end..], caps) {
                        return true;
                    }
                    if pushed {
                        caps.pop();
                    }
                }
                false
            }
        }
    }
    let mut caps = Vec::new();
    go(&pieces, text, &mut caps).then_some(caps)
}

/// Splits a question into sentences: each ends with `.` or `?` followed by whitespace or the
/// end of the text.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'.' || b == b'?') && bytes.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Generation

/// Problem `index` of `config` (the same problem whatever `config.count` is).
pub fn generate_problem(config: &ProblemConfig, index: usize) -> Problem {
    let difficulty = config.difficulty.clamp(1, 5);
    let r = ranges(difficulty);
    let mut rng = Rng::new(mix(&[config.seed, u64::from(difficulty), index as u64]));
    let &(name, pronoun) = rng.pick(NAMES);
    let item = *rng.pick(ITEMS);
    let others: Vec<&str> = NAMES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != name)
        .collect();
    let other_items: Vec<&str> = ITEMS.iter().map(|i| i.1).filter(|i| *i != item.1).collect();
    let mut slots = Slots {
        name,
        pronoun,
        item,
        other: others[0],
        other_items: other_items[0],
        n: 0,
        m: 0,
    };

    let start = rng.range(r.start.0, r.start.1);
    slots.n = start;
    let opening = *rng.pick::<&str>(START);
    let mut question = vec![fill(opening, &slots)];
    let mut steps: Vec<Step> = Vec::new();
    let mut total = start;
    let mut remaining = config.operations();
    while remaining > 0 {
        let op = choose_operation(&mut rng, total, remaining, &r);
        remaining -= op.computations();
        total = op.apply(total).unwrap_or(total);
        (slots.n, slots.m) = match op {
            Operation::Add(n)
            | Operation::Subtract(n)
            | Operation::Multiply(n)
            | Operation::Divide(n)
            | Operation::Sell { price: n } => (n, 0),
            Operation::AddGroups { groups, each } | Operation::SubtractGroups { groups, each } => {
                (groups, each)
            }
        };
        slots.other = *rng.pick(&others);
        let template = *rng.pick::<&str>(templates_of(&op));
        let sentence = fill(template, &slots);
        steps.push(Step {
            operation: op,
            sentence,
        });
    }
    let ask = if matches!(
        steps.last().map(|s| s.operation),
        Some(Operation::Sell { .. })
    ) {
        rng.pick(ASK_MONEY)
    } else {
        rng.pick(ASK_ITEMS)
    };
    let ask = fill(ask, &slots);

    // Distractors come from their own stream, so that the problem is the same without them.
    let mut distractors = Vec::new();
    let mut at = Vec::new();
    if config.distractors {
        let mut drng = Rng::new(mix(&[
            config.seed,
            u64::from(difficulty),
            index as u64,
            0xd157,
        ]));
        let n = 1 + usize::from(difficulty >= 4 && drng.chance(0.5));
        let mut kinds: Vec<usize> = (0..DISTRACTORS.len()).collect();
        for _ in 0..n {
            let kind = kinds.remove(drng.below(kinds.len()));
            slots.other = *drng.pick(&others);
            slots.other_items = *drng.pick(&other_items);
            slots.n = match kind {
                1 => drng.range(7, 15),
                2 => drng.range(5, 60),
                3 => drng.range(5, 30),
                _ => drng.range(2, 30),
            };
            distractors.push(fill(DISTRACTORS[kind], &slots));
            at.push(drng.range(0, steps.len() as u64) as usize);
        }
    }
    for (i, s) in steps.iter().enumerate() {
        for (d, &pos) in distractors.iter().zip(&at) {
            if pos == i {
                question.push(d.clone());
            }
        }
        question.push(s.sentence.clone());
    }
    for (d, &pos) in distractors.iter().zip(&at) {
        if pos == steps.len() {
            question.push(d.clone());
        }
    }
    question.push(ask);
    // Distractors in the order the question states them.
    let text = question.join(" ");
    let mut ordered = distractors;
    ordered.sort_by_key(|d| text.find(d.as_str()));
    Problem {
        question: text,
        name: name.to_string(),
        pronoun,
        items: item.1.to_string(),
        start,
        steps,
        distractors: ordered,
    }
}

/// Picks an operation that keeps the total a positive integer within bounds and uses at most
/// `remaining` computations.
fn choose_operation(rng: &mut Rng, total: u64, remaining: usize, r: &Ranges) -> Operation {
    if remaining == 1 && total >= 2 && rng.chance(0.25) {
        let price = rng.range(2, r.price);
        if total * price <= MAX_VALUE {
            return Operation::Sell { price };
        }
    }
    for _ in 0..20 {
        let op = match rng.below(6) {
            0 => Operation::Add(rng.range(1, r.operand)),
            1 => Operation::Subtract(rng.range(1, r.operand.min(total.saturating_sub(1)))),
            2 => Operation::Multiply(rng.range(2, r.factor)),
            3 => {
                let divisors: Vec<u64> = (2..=r.factor)
                    .filter(|&d| total.is_multiple_of(d) && total / d >= 2)
                    .collect();
                if divisors.is_empty() {
                    continue;
                }
                Operation::Divide(*rng.pick(&divisors))
            }
            4 if remaining >= 2 => Operation::AddGroups {
                groups: rng.range(2, r.groups),
                each: rng.range(2, r.each),
            },
            5 if remaining >= 2 => Operation::SubtractGroups {
                groups: rng.range(2, r.groups),
                each: rng.range(2, r.each),
            },
            _ => continue,
        };
        let fits = match op {
            Operation::Subtract(n) => n >= 1 && n < total,
            Operation::Multiply(_) => total >= 2,
            _ => true,
        };
        if fits && op.apply(total).is_some_and(|t| t >= 1 && t <= r.bound) {
            return op;
        }
    }
    // Always possible: totals stay in 1..=bound, so one of these fits.
    if total < r.bound {
        Operation::Add(rng.range(1, r.operand.min(r.bound - total)))
    } else {
        Operation::Subtract(rng.range(1, r.operand.min(total - 1)))
    }
}

/// The problems of `config`, as traces: question, the short solution as `reasoning`, the
/// answer as `answer` and `gold`, id `procedural/<seed>/<i>`, provenance source
/// `procedural:seed=S,difficulty=D:<i>` and teacher `procedural` (they are generated, not
/// drawn from a dataset).
pub fn generate_problems(config: &ProblemConfig) -> Vec<Trace> {
    (0..config.count)
        .map(|i| {
            let p = generate_problem(config, i);
            let answer = p.answer().unwrap_or_default().to_string();
            Trace {
                schema: SCHEMA_VERSION,
                id: format!("procedural/{}/{i}", config.seed),
                system: None,
                question: p.question.clone(),
                reasoning: p.reasoning().unwrap_or_default(),
                answer: answer.clone(),
                gold: Some(answer),
                ratio: None,
                provenance: Some(Provenance {
                    source: format!(
                        "procedural:seed={},difficulty={}:{i}",
                        config.seed, config.difficulty
                    ),
                    teacher: Some("procedural".into()),
                    note: Some(format!(
                        "generated by laconic's procedural problem generator (difficulty {}, \
                         distractors {}), not from a real dataset",
                        config.difficulty,
                        if config.distractors { "on" } else { "off" }
                    )),
                    ..Provenance::default()
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Reads a problem that [`generate_problem`] wrote back from its text; `None` for any other
/// text.
pub fn parse_problem(question: &str) -> Option<Problem> {
    let text = question.trim();
    let all = sentences(text);
    let (first, rest) = all.split_first()?;
    let (ask, middle) = rest.split_last()?;
    let get = |caps: &[(String, &str)], slot: &str| {
        caps.iter()
            .find(|(s, _)| s == slot)
            .map(|(_, v)| v.to_string())
    };
    let caps = START.iter().find_map(|t| match_template(t, first))?;
    let name = get(&caps, "Name")?;
    let items = get(&caps, "items")?;
    let start: u64 = get(&caps, "n")?.parse().ok()?;
    let mut pronoun: Option<Pronoun> = None;
    // Whether captures agree with the protagonist, items and pronoun (setting the pronoun).
    let agrees = |caps: &[(String, &str)], pronoun: &mut Option<Pronoun>| -> bool {
        for (slot, value) in caps {
            let ok = match slot.as_str() {
                "Name" => *value == name,
                "Other" => !matches!(*value, "He" | "She") && *value != name,
                "items" => *value == items,
                "He" | "he" | "him" | "his" | "His" | "himself" => {
                    match (Pronoun::of(slot, value), *pronoun) {
                        (None, _) => false,
                        (Some(p), None) => {
                            *pronoun = Some(p);
                            true
                        }
                        (Some(p), Some(q)) => p == q,
                    }
                }
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        true
    };
    let number = |caps: &[(String, &str)], slot: &str| -> Option<u64> {
        caps.iter()
            .find(|(s, _)| s == slot)
            .and_then(|(_, v)| v.parse().ok())
    };
    type Build = fn(u64, u64) -> Operation;
    let kinds: [(&[&str], Build); 7] = [
        (ADD, |n, _| Operation::Add(n)),
        (SUBTRACT, |n, _| Operation::Subtract(n)),
        (MULTIPLY, |n, _| Operation::Multiply(n)),
        (DIVIDE, |n, _| Operation::Divide(n)),
        (ADD_GROUPS, |groups, each| Operation::AddGroups {
            groups,
            each,
        }),
        (SUBTRACT_GROUPS, |groups, each| Operation::SubtractGroups {
            groups,
            each,
        }),
        (SELL, |price, _| Operation::Sell { price }),
    ];
    let mut steps = Vec::new();
    let mut distractors = Vec::new();
    for &s in middle {
        let mut step = None;
        'kinds: for (templates, build) in &kinds {
            for t in *templates {
                if let Some(caps) = match_template(t, s)
                    && agrees(&caps, &mut pronoun)
                {
                    let n = number(&caps, "n")?;
                    let m = number(&caps, "m").unwrap_or(0);
                    step = Some(Step {
                        operation: build(n, m),
                        sentence: s.to_string(),
                    });
                    break 'kinds;
                }
            }
        }
        if let Some(step) = step {
            if matches!(
                steps.last().map(|s: &Step| s.operation),
                Some(Operation::Sell { .. })
            ) {
                return None; // nothing follows a sale
            }
            steps.push(step);
        } else if DISTRACTORS
            .iter()
            .any(|t| match_template(t, s).is_some_and(|c| agrees(&c, &mut pronoun)))
        {
            distractors.push(s.to_string());
        } else {
            return None;
        }
    }
    let money = matches!(
        steps.last().map(|s: &Step| s.operation),
        Some(Operation::Sell { .. })
    );
    let asks = if money { ASK_MONEY } else { ASK_ITEMS };
    if !asks
        .iter()
        .any(|t| match_template(t, ask).is_some_and(|c| agrees(&c, &mut pronoun)))
    {
        return None;
    }
    let problem = Problem {
        question: text.to_string(),
        pronoun: pronoun.or_else(|| NAMES.iter().find(|(n, _)| *n == name).map(|n| n.1))?,
        name,
        items,
        start,
        steps,
        distractors,
    };
    problem.computations()?;
    Some(problem)
}

// ---------------------------------------------------------------------------------------------
// The verbose teacher

/// The share of [`ProceduralTeacher`] samples that carry an arithmetic slip they do not
/// catch, and so end with a wrong answer.
pub const WRONG_SHARE: f64 = 0.12;

/// The share of samples (among those without an uncaught slip) with a slip that is caught
/// and corrected.
pub const CAUGHT_SHARE: f64 = 0.3;

/// The model name [`ProceduralTeacher`] reports, so that no trace can pass for a real model's.
pub const PROCEDURAL_MODEL: &str = "procedural-verbose (stand-in teacher)";

/// The styles `procedural:STYLE` knows.
pub const PROCEDURAL_STYLES: &[&str] = &["verbose"];

/// Whether a sample went wrong on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slip {
    /// No slip.
    None,
    /// A slip it noticed and corrected: the answer is right.
    Caught,
    /// A slip it did not notice: the answer is wrong.
    Uncaught,
}

/// One answer of the verbose teacher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerboseAnswer {
    /// The whole reply: `<think>\n…\n</think>\n\n<one sentence>\n\n#### N`.
    pub content: String,
    /// The text inside `<think>…</think>`.
    pub reasoning: String,
    /// The final answer it states.
    pub answer: u64,
    /// Whether it slipped.
    pub slip: Slip,
}

/// A rough token count: every run of letters or digits is one, and so is every other
/// character that is not whitespace (`12 * 3 = 36.` is 6). It stands in for a tokenizer's
/// count in [`TeacherSample`]'s token fields; real tokenizers give more (SmolLM2's gives
/// about 1.25 times as many on these traces, measured).
pub fn count_tokens(text: &str) -> u64 {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                n += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    n
}

// Phrase banks of the verbose teacher. Slots: `{name}`, `{he}`, `{He}`, `{items}`, `{unit}`
// (items, or dollars once sold), `{goal}`, and `{x}`, `{r}`, `{wrong}` for numbers and
// equations. The banks named in the comments hold no numbers of their own: they are the
// filler a compressor should learn to drop.

/// No numbers.
const OPENINGS: &[&str] = &[
    "Okay, let me see.",
    "Alright, let's work through this.",
    "Hmm, okay, let me think about this problem.",
    "Okay, so let me read the problem carefully.",
];
const RESTATE: &[&str] = &[
    "The problem says: {x}",
    "Let me restate it to be sure: {x}",
    "So the question is: {x}",
];
/// No numbers.
const GOALS: &[&str] = &[
    "So I need to find out {goal}.",
    "The question is asking {goal}.",
    "What I need to figure out is {goal}.",
];
/// No numbers.
const PLANS: &[&str] = &[
    "Let me go through it step by step and keep track of the total as I go.",
    "I'll take it one sentence at a time so I don't lose track of anything.",
    "There are a few steps here, so let me be careful and not rush.",
];
const STARTS: &[&str] = &[
    "So at the start, {name} has {x} {items}.",
    "{name} begins with {x} {items}.",
    "Initially, {name} has {x} {items}.",
];
const STEP_FIRST: &[&str] = &[
    "First, the problem says: {x}",
    "Okay, first: {x}",
    "To begin with: {x}",
];
const STEP_NEXT: &[&str] = &[
    "Next, the problem says: {x}",
    "Then: {x}",
    "After that, it says: {x}",
    "Now the next part: {x}",
];
const STEP_LAST: &[&str] = &[
    "Finally, the problem says: {x}",
    "And the last step: {x}",
    "Then, at the end: {x}",
];
/// No numbers.
const PONDER: &[&str] = &[
    "Hmm, so what does that do to the total?",
    "Let me think about what this means.",
    "Okay, this part changes the number again.",
    "Let me be careful with this one.",
];
const COMPUTE: &[&str] = &[
    "{x}, so now {he} has {r} {unit}.",
    "So {x} {unit}.",
    "That gives {x}.",
    "{x} {unit} now.",
];
const COMPUTE_GROUPS: &[&str] = &[
    "That's {x} {items}.",
    "In the groups there are {x} {items}.",
    "{x}, so that's {r} {items} in those groups.",
];
/// No numbers.
const SLIP_NOTICED: &[&str] = &[
    "Wait, that doesn't look right.",
    "Hmm, wait. That can't be right.",
    "Hold on, let me redo that, something is off.",
];
/// No numbers.
const CHECK_INTROS: &[&str] = &[
    "Wait, let me double-check that.",
    "Hmm, let me make sure I didn't mess that up.",
    "Let me verify that before moving on.",
    "Actually, let me check this again to be safe.",
];
/// No numbers.
const CHECK_OKS: &[&str] = &[
    "Yes, that's right.",
    "Okay, good, that checks out.",
    "Right, so that part is correct.",
];
/// No numbers.
const HEDGES: &[&str] = &[
    "Okay, so far so good.",
    "Alright, that makes sense.",
    "Good, let me keep going.",
    "So that's where {he} stands after this step.",
    "Okay, I think I have that part right.",
];
const DISTRACTOR_SEEN: &[&str] = &[
    "The problem also says: {x}",
    "There's also this part: {x}",
    "It also mentions: {x}",
];
/// No numbers.
const DISTRACTOR_SKIPPED: &[&str] = &[
    "But that has nothing to do with {name}'s {items}, so I can ignore it.",
    "That doesn't change anything we need, it's just extra information.",
    "Hmm, is that relevant? No, it doesn't affect the answer, so I'll set it aside.",
];
/// No numbers.
const ANYTHING_MISSED: &[&str] = &[
    "Wait, did I miss anything?",
    "Hmm, is there anything else in the problem I should use?",
];
/// No numbers.
const RECAP_INTROS: &[&str] = &[
    "Let me go over everything once more to be sure.",
    "Let me recap the whole thing quickly.",
    "Before I answer, let me trace through it all again.",
];
/// No numbers.
const RECAP_OKS: &[&str] = &[
    "Yes, every step checks out.",
    "Everything is consistent, so I'm confident.",
    "That all lines up.",
];
const ANSWERS: &[&str] = &[
    "So the answer is {x}.",
    "So {name} ends up with {x} {unit}.",
    "Therefore, the final answer is {x}.",
];
/// No numbers.
const CONFIDENT: &[&str] = &[
    "I'm pretty sure about this.",
    "Yeah, I think that's it.",
    "That seems right to me.",
];

/// What an operation means for the total (no numbers).
fn interpretations(op: &Operation) -> &'static [&'static str] {
    match op {
        Operation::Add(_) => &[
            "So {he} gets more {items}, which means I need to add.",
            "That increases the total, so this is an addition.",
        ],
        Operation::Subtract(_) => &[
            "So {he} has fewer {items} after this, which means I subtract.",
            "That takes some away, so this is a subtraction.",
        ],
        Operation::Multiply(_) => &[
            "So the total gets multiplied here.",
            "That means {he} ends up with several times what {he} had, so I multiply.",
        ],
        Operation::Divide(_) => &[
            "So {he} keeps only one equal share, which means I divide.",
            "Splitting into equal parts and keeping one part means dividing.",
        ],
        Operation::AddGroups { .. } => &[
            "So first I need how many {items} are in those groups, and then I add them.",
            "This has two parts: multiply to get the new amount, then add it to the total.",
        ],
        Operation::SubtractGroups { .. } => &[
            "So first I need how many {items} {he} gives away in total, then subtract.",
            "This has two parts: multiply to get the amount, then take it away from the total.",
        ],
        Operation::Sell { .. } => &[
            "So to get the money I multiply the number of {items} by the price.",
            "The money is the number sold times the price of each one.",
        ],
    }
}

/// The verbose teacher's pen: picks phrasings, fills their slots, and gathers lines into
/// paragraphs.
struct Voice<'a> {
    rng: Rng,
    slots: Vec<(&'static str, &'a str)>,
    paragraphs: Vec<Vec<String>>,
    lines: Vec<String>,
}

impl Voice<'_> {
    /// Writes one phrase of `bank`, its slots filled from the voice's and `extra`.
    fn say(&mut self, bank: &[&str], extra: &[(&str, &str)]) {
        let template = *self.rng.pick(bank);
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let key = &rest[open + 1..close];
            let value = extra
                .iter()
                .chain(self.slots.iter())
                .find(|(k, _)| *k == key)
                .map_or(&rest[open..=close], |(_, v)| *v);
            out.push_str(value);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        self.lines.push(out);
    }

    /// [`Voice::say`] with probability `p`.
    fn maybe(&mut self, p: f64, bank: &[&str], extra: &[(&str, &str)]) {
        if self.rng.chance(p) {
            self.say(bank, extra);
        }
    }

    fn end_paragraph(&mut self) {
        if !self.lines.is_empty() {
            self.paragraphs.push(std::mem::take(&mut self.lines));
        }
    }
}

/// Writes the verbose teacher's answer to `problem` for one sample `seed`: how wordy it is,
/// which phrasings it uses, and whether it slips (caught or not) all follow from the seed.
/// `None` if the problem has no solution in whole numbers.
pub fn verbose_answer(problem: &Problem, seed: u64) -> Option<VerboseAnswer> {
    let correct = problem.computations()?;
    let mut rng = Rng::new(mix(&[seed, 0x7e4c_4e55]));
    // Verbosity: scales the chance of each optional sentence. Even the tersest sample keeps
    // about half its words in filler, so that a shortest-correct pick still has some to lose.
    let v = 0.5 + 0.5 * rng.unit();
    let mut slip = if rng.chance(WRONG_SHARE) {
        Slip::Uncaught
    } else if rng.chance(CAUGHT_SHARE) {
        Slip::Caught
    } else {
        Slip::None
    };
    let slip_at = rng.below(correct.len());
    let mut comps = correct.clone();
    if slip == Slip::Uncaught {
        match uncaught(problem, &correct, slip_at, &mut rng) {
            Some(c) => comps = c,
            None => slip = Slip::None,
        }
    }
    let final_value = comps.last().map_or(problem.start, |c| c.result);
    let money = problem.asks_money();
    let p = problem.pronoun;
    let goal = if money {
        format!("how many dollars {} makes", problem.name)
    } else {
        format!("how many {} {} has at the end", problem.items, problem.name)
    };
    let mut w = Voice {
        rng,
        slots: vec![
            ("name", problem.name.as_str()),
            ("he", p.form("he")),
            ("He", p.form("He")),
            ("items", problem.items.as_str()),
            ("unit", if money { "dollars" } else { &problem.items }),
            ("goal", &goal),
        ],
        paragraphs: Vec::new(),
        lines: Vec::new(),
    };
    let num = |n: u64| n.to_string();

    w.say(OPENINGS, &[]);
    w.maybe(0.2 + 0.5 * v, RESTATE, &[("x", &problem.question)]);
    w.maybe(0.6 + 0.4 * v, GOALS, &[]);
    w.maybe(v, PLANS, &[]);
    let distractors_early = w.rng.chance(0.5);
    let mention_distractors = w.rng.chance(0.5 + 0.5 * v);
    if mention_distractors && distractors_early {
        for d in &problem.distractors {
            w.say(DISTRACTOR_SEEN, &[("x", d)]);
            w.say(DISTRACTOR_SKIPPED, &[]);
        }
    }
    w.end_paragraph();
    w.say(STARTS, &[("x", &num(problem.start))]);
    w.end_paragraph();

    let mut k = 0;
    for (i, step) in problem.steps.iter().enumerate() {
        let n = step.operation.computations();
        w.maybe(0.3 * v, PONDER, &[]);
        let connectors = match i {
            0 => STEP_FIRST,
            _ if i + 1 == problem.steps.len() => STEP_LAST,
            _ => STEP_NEXT,
        };
        w.maybe(0.2 + 0.5 * v, connectors, &[("x", &step.sentence)]);
        w.maybe(0.5 + 0.5 * v, interpretations(&step.operation), &[]);
        for (j, c) in comps[k..k + n].iter().enumerate() {
            let index = k + j;
            let bank = if n == 2 && j == 0 {
                COMPUTE_GROUPS
            } else {
                COMPUTE
            };
            if slip == Slip::Caught && index == slip_at {
                let wrong = slipped(c, &mut w.rng);
                w.say(
                    bank,
                    &[("x", &wrong.to_string()), ("r", &num(wrong.result))],
                );
                w.say(SLIP_NOTICED, &[]);
                w.lines.push(format!(
                    "{} {} {} is {}, not {}.",
                    c.left,
                    word(c.op),
                    c.right,
                    c.result,
                    wrong.result
                ));
                w.lines.push(format!("So {c}. Okay, that's fixed now."));
            } else {
                w.say(bank, &[("x", &c.to_string()), ("r", &num(c.result))]);
            }
            let uncaught_here = slip == Slip::Uncaught && index == slip_at;
            if !uncaught_here && w.rng.chance(0.5 * v) {
                w.say(CHECK_INTROS, &[]);
                w.lines.push(check_line(c));
                w.say(CHECK_OKS, &[]);
            }
        }
        w.maybe(0.3 + 0.4 * v, HEDGES, &[]);
        k += n;
        w.end_paragraph();
    }

    if mention_distractors && !distractors_early {
        for d in &problem.distractors {
            w.say(ANYTHING_MISSED, &[]);
            w.say(DISTRACTOR_SEEN, &[("x", d)]);
            w.say(DISTRACTOR_SKIPPED, &[]);
        }
        w.end_paragraph();
    }
    if w.rng.chance(0.2 + 0.6 * v) {
        w.say(RECAP_INTROS, &[]);
        let mut chain = vec![num(problem.start)];
        let mut k = 0;
        for s in &problem.steps {
            k += s.operation.computations();
            chain.push(num(comps[k - 1].result));
        }
        w.lines
            .push(format!("The total goes {}.", chain.join(", then ")));
        w.say(RECAP_OKS, &[]);
        w.end_paragraph();
    }
    w.say(ANSWERS, &[("x", &num(final_value))]);
    w.maybe(0.3 + 0.5 * v, CONFIDENT, &[]);
    w.end_paragraph();

    let reasoning = w
        .paragraphs
        .iter()
        .map(|p| p.join("\n"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let summary = if money {
        format!("{} makes {final_value} dollars.", problem.name)
    } else {
        format!(
            "{} has {final_value} {} at the end.",
            problem.name, problem.items
        )
    };
    let content = format!("<think>\n{reasoning}\n</think>\n\n{summary}\n\n#### {final_value}");
    Some(VerboseAnswer {
        content,
        reasoning,
        answer: final_value,
        slip,
    })
}

/// The computations after an uncaught slip at `at`: its result is off by a multiple of every
/// later divisor (so later divisions stay exact), and the rest follows from it. Every
/// operation is one-to-one on the total, so the final answer is wrong.
fn uncaught(
    problem: &Problem,
    correct: &[Computation],
    at: usize,
    rng: &mut Rng,
) -> Option<Vec<Computation>> {
    let divisors: i64 = correct[at + 1..]
        .iter()
        .filter(|c| c.op == '/')
        .map(|c| c.right as i64)
        .product();
    let size = *rng.pick(&[1i64, 1, 2, 10]);
    let sign = if rng.chance(0.5) { 1 } else { -1 };
    [sign * size * divisors, -sign * size * divisors, divisors]
        .into_iter()
        .find_map(|delta| problem.computations_with(Some((at, delta))))
        .filter(|c| c.last().map(|c| c.result) != correct.last().map(|c| c.result))
}

/// A computation with a small error in its result (never negative, never the right value).
fn slipped(c: &Computation, rng: &mut Rng) -> Computation {
    let deltas: &[i64] = match c.op {
        '*' => &[-(c.right as i64), c.right as i64, 10, -10, 2],
        _ => &[1, -1, 2, 10, -10],
    };
    let delta = *rng.pick(deltas);
    let result = match c.result.checked_add_signed(delta) {
        Some(r) if r != c.result => r,
        _ => c.result + 1,
    };
    Computation { result, ..*c }
}

/// The operator as a word.
fn word(op: char) -> &'static str {
    match op {
        '+' => "plus",
        '-' => "minus",
        '*' => "times",
        _ => "divided by",
    }
}

/// A re-check by the inverse operation (`24 - 12 = 12, which matches. So 12 + 12 = 24.`).
fn check_line(c: &Computation) -> String {
    let (l, r, res) = (c.left, c.right, c.result);
    let (inverse, back) = match c.op {
        '+' => ('-', res.saturating_sub(r)),
        '-' => ('+', res + r),
        '*' => ('/', res / r.max(1)),
        _ => ('*', res * r),
    };
    format!(
        "{res} {inverse} {r} = {back}, which matches. So {l} {} {r} = {res}.",
        c.op
    )
}

/// The `procedural:verbose` teacher: answers the problems of [`generate_problems`] the way a
/// wordy reasoning model would (see [`verbose_answer`]). It is a stand-in for a real teacher
/// and says so: its spec is `procedural:verbose` and its model `procedural-verbose (stand-in
/// teacher)`, both recorded in every trace's provenance.
///
/// Only the sample's seed matters (temperature, top-p and `max_tokens` are ignored); token
/// counts are [`count_tokens`]'s. A problem it cannot read back with [`parse_problem`] is an
/// error, not a guess.
#[derive(Debug, Clone)]
pub struct ProceduralTeacher {
    style: String,
}

impl ProceduralTeacher {
    /// The teacher of `style` (only `verbose` exists).
    pub fn new(style: &str) -> Result<Self> {
        if !PROCEDURAL_STYLES.contains(&style) {
            return Err(TraceError::TeacherSpec {
                spec: format!("procedural:{style}"),
                message: format!(
                    "unknown procedural teacher style `{style}` (expected procedural:verbose)"
                ),
            });
        }
        Ok(Self {
            style: style.to_string(),
        })
    }
}

impl Teacher for ProceduralTeacher {
    fn spec(&self) -> String {
        format!("procedural:{}", self.style)
    }

    fn model(&self) -> Option<String> {
        Some(PROCEDURAL_MODEL.into())
    }

    /// It costs microseconds a sample: one worker per core, up to 16.
    fn concurrency(&self) -> usize {
        std::thread::available_parallelism().map_or(4, |n| n.get().min(16))
    }

    fn sample(&self, request: &SampleRequest<'_>) -> Result<TeacherSample> {
        let fail = || TraceError::Teacher {
            teacher: self.spec(),
            message: format!(
                "procedural:verbose only answers procedural problems (`--problems \
                 procedural:...`); cannot read problem `{}`",
                request.problem.id
            ),
        };
        let problem = parse_problem(&request.problem.question).ok_or_else(fail)?;
        let seed = mix(&[request.sampling.seed, request.index as u64]);
        let answer = verbose_answer(&problem, seed).ok_or_else(fail)?;
        let prompt: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(TeacherSample {
            prompt_tokens: Some(count_tokens(&prompt)),
            completion_tokens: Some(count_tokens(&answer.content)),
            reasoning_tokens: Some(count_tokens(&answer.reasoning)),
            content: answer.content,
            reasoning: None,
            finish_reason: Some("stop".into()),
            model: Some(PROCEDURAL_MODEL.into()),
            attempts: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_prints_back_and_names_bad_keys() {
        assert_eq!(
            ProblemConfig::parse("").expect("empty"),
            ProblemConfig::default()
        );
        let c =
            ProblemConfig::parse("count=20, seed=7,difficulty=4,distractors=no").expect("parse");
        assert_eq!(
            c,
            ProblemConfig {
                count: 20,
                seed: 7,
                difficulty: 4,
                distractors: false
            }
        );
        assert_eq!(ProblemConfig::parse(&c.to_string()).expect("round trip"), c);
        for (bad, key) in [
            ("count=0", "count"),
            ("count=x", "count"),
            ("seed=-1", "seed"),
            ("difficulty=6", "difficulty"),
            ("difficulty=0", "difficulty"),
            ("distractors=maybe", "distractors"),
            ("size=3", "size"),
            ("seed=1,seed=2", "seed"),
            ("count", "count"),
        ] {
            let e = ProblemConfig::parse(bad).expect_err(bad);
            assert!(e.contains(&format!("`{key}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn the_generator_is_splitmix64() {
        // The first outputs of SplitMix64 seeded with 0 (the reference implementation's).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn templates_match_what_they_fill() {
        let slots = Slots {
            name: "Mia",
            pronoun: Pronoun::She,
            item: ITEMS[0],
            other: "Leo",
            other_items: "pears",
            n: 3,
            m: 12,
        };
        let all = [
            START,
            ADD,
            SUBTRACT,
            MULTIPLY,
            DIVIDE,
            ADD_GROUPS,
            SUBTRACT_GROUPS,
            SELL,
            DISTRACTORS,
            ASK_ITEMS,
            ASK_MONEY,
        ];
        for t in all.iter().flat_map(|ts| ts.iter()) {
            let text = fill(t, &slots);
            assert!(!text.contains('{'), "{t}");
            let caps = match_template(t, &text).unwrap_or_else(|| panic!("{t}: {text}"));
            for (slot, value) in caps {
                let want = match slot.as_str() {
                    "n" => "3",
                    "m" => "12",
                    "Name" => "Mia",
                    "Other" => "Leo",
                    "items" => "apples",
                    _ => continue,
                };
                assert_eq!(value, want, "{t}");
            }
            assert_eq!(sentences(&text), vec![text.as_str()], "{t}");
        }
        assert_eq!(
            fill("{He} buys {n} more {items}.", &slots),
            "She buys 3 more apples."
        );
        assert!(
            match_template("{He} buys {n} more {items}.", "She buys many more apples.").is_none()
        );
    }

    #[test]
    fn a_problem_reads_back_and_solves() {
        let q = "Mia has 12 apples. Leo has 9 pears. She buys 3 bags with 4 apples in each. \
                 She gives 6 apples to Leo. She splits the apples equally into 3 bags and keeps \
                 one bag. How many apples does Mia have now?";
        let p = parse_problem(q).expect("parse");
        assert_eq!(p.start, 12);
        assert_eq!(p.pronoun, Pronoun::She);
        assert_eq!(
            p.steps.iter().map(|s| s.operation).collect::<Vec<_>>(),
            vec![
                Operation::AddGroups { groups: 3, each: 4 },
                Operation::Subtract(6),
                Operation::Divide(3)
            ]
        );
        assert_eq!(p.distractors, vec!["Leo has 9 pears."]);
        assert_eq!(p.answer(), Some(6));
        assert_eq!(
            p.reasoning().expect("reasoning"),
            "She gets 3 * 4 = 12 apples, so she has 12 + 12 = 24 apples.\n\
             She has 24 - 6 = 18 apples left.\n\
             She keeps 18 / 3 = 6 apples."
        );
        // 24 - 5 = 19 is not divisible by 3: not a problem the generator would write.
        assert!(parse_problem(&q.replace("gives 6", "gives 5")).is_none());
        // Another name in the middle of the story is not the protagonist.
        assert!(parse_problem(&q.replace("She gives 6", "Leo loses 6")).is_none());
        assert!(parse_problem("Janet has 3 apples. She buys 2 more. How many?").is_none());
        assert!(parse_problem("").is_none());
    }

    #[test]
    fn generated_problems_read_back_exactly() {
        for difficulty in 1..=5 {
            for distractors in [false, true] {
                let config = ProblemConfig {
                    count: 200,
                    seed: 11,
                    difficulty,
                    distractors,
                };
                for i in 0..config.count {
                    let p = generate_problem(&config, i);
                    assert_eq!(
                        parse_problem(&p.question).as_ref(),
                        Some(&p),
                        "{}",
                        p.question
                    );
                    let total: usize = p.steps.iter().map(|s| s.operation.computations()).sum();
                    assert_eq!(total, config.operations(), "{}", p.question);
                    assert!(p.answer().is_some(), "{}", p.question);
                }
            }
        }
    }

    #[test]
    fn token_count_counts_words_and_symbols() {
        assert_eq!(count_tokens("12 * 3 = 36."), 6);
        assert_eq!(count_tokens("Wait, let me double-check."), 8);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn slips_are_caught_or_make_the_answer_wrong() {
        let config = ProblemConfig {
            count: 40,
            seed: 3,
            difficulty: 3,
            distractors: true,
        };
        let mut seen = [0usize; 3];
        for i in 0..config.count {
            let p = generate_problem(&config, i);
            let gold = p.answer().expect("answer");
            for s in 0..10 {
                let a = verbose_answer(&p, mix(&[i as u64, s])).expect("answer");
                match a.slip {
                    Slip::None => seen[0] += 1,
                    Slip::Caught => seen[1] += 1,
                    Slip::Uncaught => seen[2] += 1,
                }
                assert_eq!(a.answer == gold, a.slip != Slip::Uncaught, "{}", a.content);
                assert!(a.content.ends_with(&format!("\n\n#### {}", a.answer)));
                assert!(a.content.starts_with("<think>\n"));
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }

    #[test]
    fn unknown_styles_are_refused() {
        assert!(ProceduralTeacher::new("verbose").is_ok());
        let e = ProceduralTeacher::new("terse")
            .expect_err("terse")
            .to_string();
        assert!(e.contains("procedural:verbose"), "{e}");
    }
}
