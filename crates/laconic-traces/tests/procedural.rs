//! The procedural stand-ins: generated problems (deterministic, solvable in small whole
//! numbers, harder with the difficulty) and the `procedural:verbose` teacher (correct but
//! wordy, sometimes wrong on purpose), end to end through the distiller.

use laconic_traces::distill::{DistillConfig, Select, distill};
use laconic_traces::procedural::{
    Operation, PROCEDURAL_MODEL, ProblemConfig, Slip, WRONG_SHARE, count_tokens, generate_problem,
    generate_problems, parse_problem, verbose_answer,
};
use laconic_traces::schema::read_traces;
use laconic_traces::teacher::{
    ChatMessage, ClientOptions, SampleRequest, SamplingParams, Teacher, TeacherSample, TeacherSpec,
    sample_seed,
};
use laconic_traces::{DatasetSpec, Grader, Trace};

fn config(count: usize, seed: u64, difficulty: u8) -> ProblemConfig {
    ProblemConfig {
        count,
        seed,
        difficulty,
        distractors: true,
    }
}

fn teacher() -> Box<dyn Teacher> {
    TeacherSpec::parse("procedural:verbose")
        .expect("spec")
        .open(&ClientOptions::default())
        .expect("open")
}

/// Sample `index` of `problem`, asked the way the distiller asks (seed from base seed 0).
fn ask(teacher: &dyn Teacher, problem: &Trace, index: usize) -> TeacherSample {
    let messages = [ChatMessage {
        role: "user".into(),
        content: problem.prompt(),
    }];
    teacher
        .sample(&SampleRequest {
            problem,
            index,
            messages: &messages,
            sampling: SamplingParams {
                seed: sample_seed(0, &problem.id, index),
                ..SamplingParams::default()
            },
        })
        .expect("sample")
}

/// Every `a op b = c` in a text, as numbers.
fn equations(text: &str) -> Vec<(i64, char, i64, i64)> {
    let tokens: Vec<&str> = text
        .split_whitespace()
        .map(|t| t.trim_end_matches([',', '.']))
        .collect();
    tokens
        .windows(5)
        .filter_map(|w| {
            let op = w[1]
                .chars()
                .next()
                .filter(|c| "+-*/".contains(*c) && w[1].len() == 1)?;
            (w[3] == "=").then_some(())?;
            Some((
                w[0].parse().ok()?,
                op,
                w[2].parse().ok()?,
                w[4].parse().ok()?,
            ))
        })
        .collect()
}

/// The share of a reasoning's words that sit on lines without any digit: restating,
/// re-checking, hedging (the computation lines all hold digits).
fn filler_share(reasoning: &str) -> f64 {
    let (mut filler, mut all) = (0, 0);
    for line in reasoning.lines() {
        let words = line.split_whitespace().count();
        all += words;
        if !line.chars().any(|c| c.is_ascii_digit()) {
            filler += words;
        }
    }
    filler as f64 / all.max(1) as f64
}

#[test]
fn problems_are_deterministic_per_seed_and_differ_across_seeds() {
    let a = generate_problems(&config(100, 7, 3));
    assert_eq!(a, generate_problems(&config(100, 7, 3)));
    // Problem i does not depend on the count.
    assert_eq!(a[..40], generate_problems(&config(40, 7, 3))[..]);
    let b = generate_problems(&config(100, 8, 3));
    let same = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.question == y.question)
        .count();
    assert!(same <= 1, "{same} of 100 questions equal across seeds");
    let distinct: std::collections::HashSet<&str> = a.iter().map(|t| t.question.as_str()).collect();
    assert!(distinct.len() >= 99, "{} distinct", distinct.len());

    // Without distractors: the same problems, minus the sentences that do not matter.
    let plain = ProblemConfig {
        distractors: false,
        ..config(100, 7, 3)
    };
    for (i, t) in generate_problems(&plain).iter().enumerate() {
        let with = generate_problem(&config(100, 7, 3), i);
        let without = generate_problem(&plain, i);
        assert!(without.distractors.is_empty());
        assert!(!with.distractors.is_empty());
        assert_eq!(with.steps, without.steps);
        assert_eq!(t.gold, a[i].gold);
    }

    let t = &a[5];
    assert_eq!(t.id, "procedural/7/5");
    let p = t.provenance.as_ref().expect("provenance");
    assert_eq!(p.source, "procedural:seed=7,difficulty=3:5");
    assert_eq!(p.teacher.as_deref(), Some("procedural"));
    assert!(
        p.note.as_deref().is_some_and(|n| n.contains("generated")),
        "{p:?}"
    );
}

#[test]
fn answers_are_whole_numbers_that_brute_force_evaluation_confirms() {
    for difficulty in 1..=5 {
        let traces = generate_problems(&config(300, 100 + u64::from(difficulty), difficulty));
        for t in &traces {
            let gold: i64 = t
                .gold
                .as_deref()
                .expect("gold")
                .parse()
                .expect("integer gold");
            assert_eq!(t.answer, gold.to_string());
            // Evaluate the structure read back from the question, here, independently.
            let p = parse_problem(&t.question).unwrap_or_else(|| panic!("{}", t.question));
            let mut total = p.start as i64;
            for s in &p.steps {
                total = match s.operation {
                    Operation::Add(n) => total + n as i64,
                    Operation::Subtract(n) => total - n as i64,
                    Operation::Multiply(n) | Operation::Sell { price: n } => total * n as i64,
                    Operation::Divide(n) => {
                        assert_eq!(total % n as i64, 0, "{}", t.question);
                        total / n as i64
                    }
                    Operation::AddGroups { groups, each } => total + (groups * each) as i64,
                    Operation::SubtractGroups { groups, each } => total - (groups * each) as i64,
                };
                assert!((0..1000).contains(&total), "{}: {total}", t.question);
            }
            assert_eq!(total, gold, "{}", t.question);
            // Every equation of the short solution is right, and the last one is the answer.
            let eqs = equations(&t.reasoning);
            assert_eq!(eqs.len(), difficulty as usize + 1, "{}", t.reasoning);
            for &(a, op, b, c) in &eqs {
                let exact = match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                };
                assert_eq!(exact, c, "{}", t.reasoning);
            }
            assert_eq!(eqs.last().map(|e| e.3), Some(gold));
            assert!(
                Grader::Gsm8k
                    .grade(&t.completion(), &gold.to_string())
                    .correct
            );
        }
    }
}

#[test]
fn difficulty_sets_the_number_of_operations_and_the_size_of_numbers() {
    let mut last_mean = 0.0;
    for difficulty in 1..=5u8 {
        let c = config(200, 1, difficulty);
        let mut numbers = 0usize;
        let mut max_total = 0u64;
        for i in 0..c.count {
            let p = generate_problem(&c, i);
            let computations: usize = p.steps.iter().map(|s| s.operation.computations()).sum();
            assert_eq!(computations, difficulty as usize + 1);
            assert_eq!(
                p.computations().expect("solvable").len(),
                difficulty as usize + 1
            );
            numbers += p
                .question
                .split_whitespace()
                .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .count();
            max_total = max_total.max(p.answer().expect("answer"));
        }
        let mean = numbers as f64 / c.count as f64;
        assert!(
            mean > last_mean,
            "difficulty {difficulty}: {mean} numbers per question"
        );
        last_mean = mean;
        assert!(max_total < 1000);
    }
}

#[test]
fn the_teacher_is_right_except_when_it_slips_on_purpose() {
    let t = teacher();
    assert_eq!(t.spec(), "procedural:verbose");
    assert_eq!(t.model().as_deref(), Some(PROCEDURAL_MODEL));
    assert!(t.concurrency() >= 1);

    let problems = generate_problems(&config(100, 21, 3));
    let (mut wrong, mut caught, mut total) = (0, 0, 0);
    for trace in &problems {
        let gold = trace.gold.as_deref().expect("gold");
        let problem = parse_problem(&trace.question).expect("parse");
        for index in 0..8 {
            let s = ask(t.as_ref(), trace, index);
            assert_eq!(s.model.as_deref(), Some(PROCEDURAL_MODEL));
            assert_eq!(s.finish_reason.as_deref(), Some("stop"));
            assert_eq!(s.completion_tokens, Some(count_tokens(&s.content)));
            assert!(s.reasoning_tokens < s.completion_tokens);
            assert!(s.content.starts_with("<think>\n"), "{}", s.content);
            let (reasoning, answer) = laconic_traces::formats::split_response(None, &s.content);
            assert!(!reasoning.contains("####") && !reasoning.is_empty());
            let graded = Grader::Gsm8k.grade(&s.content, gold);
            assert_eq!(graded.extracted.as_deref(), Some(answer.as_str()));
            total += 1;
            wrong += usize::from(!graded.correct);
        }
        // The same through verbose_answer, where the slip is visible.
        for seed in 0..8 {
            let a = verbose_answer(&problem, seed).expect("answer");
            let correct = Grader::Gsm8k.grade(&a.content, gold).correct;
            assert_eq!(correct, a.slip != Slip::Uncaught, "{}", a.content);
            if a.slip == Slip::Caught {
                caught += 1;
                assert!(a.reasoning.contains("not "), "{}", a.reasoning);
            }
        }
    }
    let share = wrong as f64 / total as f64;
    assert!(
        (WRONG_SHARE - 0.05..=WRONG_SHARE + 0.05).contains(&share),
        "{wrong} of {total} samples wrong"
    );
    assert!(caught > 50, "{caught} samples caught a slip");

    // Problems it did not write are refused, not guessed at.
    let other = Trace {
        question: "Janet’s ducks lay 16 eggs per day. How many eggs in a week?".into(),
        ..problems[0].clone()
    };
    let messages = [];
    let e = t
        .sample(&SampleRequest {
            problem: &other,
            index: 0,
            messages: &messages,
            sampling: SamplingParams::default(),
        })
        .expect_err("not procedural")
        .to_string();
    assert!(e.contains("only answers procedural problems"), "{e}");
}

#[test]
fn samples_of_one_problem_differ_in_length_and_are_half_filler() {
    let t = teacher();
    let problems = generate_problems(&config(60, 4, 2));
    let mut varied = 0;
    let mut shares = Vec::new();
    for trace in &problems {
        let samples: Vec<TeacherSample> = (0..4).map(|i| ask(t.as_ref(), trace, i)).collect();
        assert_eq!(
            samples,
            (0..4)
                .map(|i| ask(t.as_ref(), trace, i))
                .collect::<Vec<_>>()
        );
        let lengths: std::collections::HashSet<Option<u64>> =
            samples.iter().map(|s| s.reasoning_tokens).collect();
        varied += usize::from(lengths.len() >= 3);
        for s in &samples {
            let (reasoning, _) = laconic_traces::formats::split_response(None, &s.content);
            shares.push(filler_share(&reasoning));
        }
    }
    assert!(
        varied >= 54,
        "only {varied} of 60 problems have 3+ sample lengths"
    );
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    assert!((0.4..=0.6).contains(&mean), "filler share {mean:.3}");
    assert!(shares.iter().all(|&s| s > 0.15 && s < 0.8), "{shares:?}");
}

#[test]
fn distill_keeps_the_shortest_correct_of_four() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("traces.jsonl");
    let spec = DatasetSpec::parse("procedural:count=50,seed=9,difficulty=2").expect("spec");
    let problems = spec.load().expect("load");
    let t = teacher();
    let config = DistillConfig {
        out: out.clone(),
        samples: 4,
        select: Select::ShortestCorrect,
        sampling: SamplingParams::default(),
        system: None,
        grader: spec.grader().expect("grader"),
    };
    let s = distill(&problems, t.as_ref(), &config, &|_| {}).expect("distill");
    assert_eq!(s.problems, 50);
    assert_eq!(s.finished, 50);
    assert_eq!((s.failed, s.incomplete), (0, 0));
    assert!(s.solved >= 49, "{} of 50 solved", s.solved);
    assert!(
        s.rejected >= 5 && s.rejected <= 45,
        "{} rejected",
        s.rejected
    );
    let (all, kept) = (
        s.mean_tokens_all.expect("all"),
        s.mean_tokens_kept.expect("kept"),
    );
    assert!(kept < 0.9 * all, "kept {kept:.1} vs all {all:.1} tokens");

    let traces = read_traces(&out).expect("read");
    assert_eq!(traces.len(), s.solved);
    // Written in problem order, whatever order the teacher's workers (one per core) answered
    // in, so that the same command writes the same file.
    let index = |id: &str| -> usize {
        id.trim_start_matches("procedural/9/")
            .split('#')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("problem index")
    };
    assert!(
        traces.windows(2).all(|w| index(&w[0].id) < index(&w[1].id)),
        "out of problem order: {:?}",
        traces.iter().map(|t| t.id.as_str()).collect::<Vec<_>>()
    );
    let mut shares = Vec::new();
    for trace in &traces {
        assert!(trace.id.starts_with("procedural/9/"), "{}", trace.id);
        let p = trace.provenance.as_ref().expect("provenance");
        assert_eq!(p.teacher.as_deref(), Some("procedural:verbose"));
        assert_eq!(p.model.as_deref(), Some(PROCEDURAL_MODEL));
        assert!(p.source.starts_with("procedural:seed=9,difficulty=2:"));
        let gold = trace.gold.as_deref().expect("gold");
        assert!(Grader::Gsm8k.grade(&trace.completion(), gold).correct);
        assert!(!trace.reasoning.contains("<think>"));
        shares.push(filler_share(&trace.reasoning));
    }
    // The shortest sample is still wordy: a compressor has about half of it to drop.
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    assert!((0.35..=0.65).contains(&mean), "kept filler share {mean:.3}");

    // A re-run asks nothing and keeps the same traces.
    let again = distill(&problems, t.as_ref(), &config, &|_| {}).expect("again");
    assert_eq!((again.requested, again.written), (0, 0));
    assert_eq!(read_traces(&out).expect("read"), traces);
}
