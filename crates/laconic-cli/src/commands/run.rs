//! `laconic run PIPELINE.toml`: the whole concise-reasoning pipeline in one command.
//!
//! distill (teacher traces, shortest correct of K) → label (compressed variants) → three
//! students: (a) on the full traces, (b) on the compressed ones, ratio-conditioned, (c) (b)
//! then GRPO with a length budget → export (int8 GGUF) → evaluate each with the full KV cache
//! and with a pruned one → `results.json`, `results.md` and plots in the run directory.
//! Every stage is a `laconic` command (printed as it starts, so it can be re-run by hand);
//! re-running skips finished stages and continues an interrupted one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use laconic_traces::DatasetSpec;
use laconic_train::Recipe;
use laconic_train::recipe::{DataSection, ExportSection, Method, ModelSection};
use laconic_train::results::{self, EvalLine, Paired, Row};
use serde_json::json;

use crate::pipeline::config::Pipeline;
use crate::pipeline::stage::{Runner, Stage};

/// Arguments of `laconic run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (TOML), e.g. recipes/quickstart.toml.
    pipeline: PathBuf,
    /// A named size from the file's `[sizes.NAME]` tables (e.g. `tiny`: a fixture model,
    /// minutes of work), merged over its settings; its run goes to `<run_dir>-<size>`.
    #[arg(long)]
    size: Option<String>,
    /// Write the run here instead of the pipeline's run directory.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Check the file and print the stages' commands without running them (the students'
    /// recipes are still written and validated; the model need not exist yet).
    #[arg(long)]
    dry_run: bool,
}

/// A student: its name, its recipe, and how it is asked at evaluation.
struct Student {
    name: &'static str,
    recipe: Recipe,
    ratio: Option<f64>,
    budget: Option<usize>,
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// The input file a dataset spec names, if it names one (procedural problems have none).
fn spec_file(spec: &str) -> Result<Option<PathBuf>> {
    let p = DatasetSpec::parse(spec)?.path().to_path_buf();
    Ok((!p.as_os_str().is_empty()).then_some(p))
}

fn students(p: &Pipeline, run: &Path) -> Vec<Student> {
    let sft_method = if p.sft.lora.is_some() {
        Method::Lora
    } else {
        Method::Sft
    };
    let base = |name: &str, train: String, method: Method| Recipe {
        name: format!("{}-{name}", p.name),
        method,
        run_dir: Some(run.join("students").join(name)),
        model: ModelSection {
            path: p.model.clone(),
            device: p.device.clone(),
        },
        data: DataSection {
            train,
            valid: None,
            valid_size: p.sft.valid_size,
            limit: None,
            max_seq_len: p.sft.max_seq_len,
            system: p.system.clone(),
            ratio: None,
        },
        lora: p.sft.lora.clone(),
        optim: p.sft.optim.clone(),
        train: p.sft.train.clone(),
        distill: None,
        eval: None,
        export: Some(ExportSection {
            format: "gguf".into(),
            merge_lora: true,
            quantize: None,
        }),
        grpo: None,
    };
    let traces = run.join("distill").join("traces.jsonl");
    let compressed = run.join("label").join("compressed.jsonl");
    let a = base("a-full", format!("traces:{}", traces.display()), sft_method);
    let b = base(
        "b-compressed",
        format!("traces:{}", compressed.display()),
        sft_method,
    );
    let mut c = base("c-grpo", p.grpo.problems.clone(), Method::Grpo);
    c.model.path = run.join("exports").join("b-merged");
    c.data.valid_size = p.grpo.valid_size;
    c.data.max_seq_len = p.grpo.max_seq_len;
    c.data.ratio = p.eval.ratio;
    c.lora = p.grpo.lora.clone();
    c.optim = p.grpo.optim.clone();
    c.train = p.grpo.train.clone();
    c.grpo = Some(p.grpo.settings.clone());
    vec![
        Student {
            name: "a-full",
            recipe: a,
            ratio: None,
            budget: None,
        },
        Student {
            name: "b-compressed",
            recipe: b,
            ratio: p.eval.ratio,
            budget: None,
        },
        Student {
            name: "c-grpo",
            recipe: c,
            ratio: p.eval.ratio,
            budget: p.eval.budget,
        },
    ]
}

/// Writes a student's recipe into the run (validated the way `laconic train` will read it).
fn write_recipe(st: &Student, dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!("{}.toml", st.name));
    let text = format!(
        "# Written by `laconic run` for student {}; `laconic train {}` runs it alone.\n{}",
        st.name,
        path.display(),
        st.recipe.to_toml()
    );
    Recipe::parse(&text, &path).with_context(|| format!("the recipe of student {}", st.name))?;
    laconic_train::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

fn train_stage(st: &Student, recipe: &Path, inputs: Vec<PathBuf>) -> Result<Stage> {
    let run = st.recipe.run_dir();
    let resume = laconic_train::checkpoint::latest(&run)?.map(|_| vec![s("--resume")]);
    Ok(Stage {
        name: format!("train-{}", st.name),
        title: format!(
            "train student {} ({})",
            st.name,
            match st.name {
                "a-full" => "on the full traces",
                "b-compressed" => "on the compressed traces, ratio-conditioned",
                _ => "student b, then GRPO with a length budget",
            }
        ),
        args: vec![s("train"), path_arg(recipe), s("--no-eval")],
        inputs,
        outputs: vec![run.join("checkpoints").join("latest")],
        resume,
        clear: vec![run],
    })
}

fn export_stage(name: &str, run: &Path, out: &Path, hf_merged: bool, quantize: &str) -> Stage {
    let mut args = vec![
        s("export"),
        s("--run"),
        path_arg(run),
        s("--out"),
        path_arg(out),
    ];
    if hf_merged {
        args.extend([s("--format"), s("hf"), s("--merge-lora")]);
    } else {
        args.extend([s("--format"), s("gguf"), s("--quantize"), s(quantize)]);
    }
    Stage {
        name: if hf_merged {
            format!("export-{name}-merged")
        } else {
            format!("export-{name}")
        },
        title: if hf_merged {
            format!("export student {name}, adapter merged (the base of GRPO)")
        } else {
            format!("export student {name} as GGUF ({quantize})")
        },
        args,
        inputs: vec![run.join("checkpoints")],
        outputs: vec![out.to_path_buf()],
        resume: None,
        clear: vec![out.to_path_buf()],
    }
}

/// The KV budget that makes the pruned cache `fraction` of the full one: `fraction` of the
/// mean peak entries of the full-cache answers, less rkv's buffer (a quarter of the budget).
fn pruned_budget(policy: &str, full_entries: f64, fraction: f64) -> usize {
    let share = full_entries * fraction;
    let b = if policy == "rkv" { share / 1.25 } else { share };
    (b.round() as usize).max(8)
}

fn mean_entries(path: &Path) -> Result<f64> {
    let lines = results::read_eval(path)?;
    if lines.is_empty() {
        bail!("{}: no evaluated problems", path.display());
    }
    Ok(lines.iter().map(|l| l.peak_kv_entries as f64).sum::<f64>() / lines.len() as f64)
}

/// Runs `laconic run`.
pub fn run(args: RunArgs) -> Result<()> {
    let p = Pipeline::load(&args.pipeline, args.size.as_deref())?;
    let run = args.run_dir.clone().unwrap_or_else(|| p.run_dir());
    if !p.model.exists() && !args.dry_run {
        bail!(
            "model {}: no such file or directory (scripts/setup.sh --model fetches SmolLM2)",
            p.model.display()
        );
    }
    std::fs::create_dir_all(run.join("recipes"))
        .with_context(|| format!("creating {}", run.display()))?;
    let started = std::time::Instant::now();
    let students = students(&p, &run);
    // Validate every recipe before any work starts.
    let recipes: Vec<PathBuf> = students
        .iter()
        .map(|st| write_recipe(st, &run.join("recipes")))
        .collect::<Result<_>>()?;
    let n_evals = 2 * students.len() + usize::from(p.eval.base) + p.eval.sweep.len();
    let total = 2 + students.len() + 1 + students.len() + n_evals;
    eprintln!(
        "laconic run {}{}: into {} ({total} stages)",
        args.pipeline.display(),
        args.size
            .as_deref()
            .map(|s| format!(" --size {s}"))
            .unwrap_or_default(),
        run.display()
    );
    let mut runner = Runner::new(&run, total, args.dry_run)?;
    let mut timings: Vec<(String, f64, bool)> = Vec::new();
    let mut go = |runner: &mut Runner, stage: Stage| -> Result<String> {
        let o = runner.run(&stage)?;
        timings.push((stage.name.clone(), o.marker.seconds, o.skipped));
        Ok(o.marker.stdout)
    };

    // 1. Distill.
    let traces = run.join("distill").join("traces.jsonl");
    let d = &p.distill;
    let mut dargs = vec![
        s("distill"),
        s("--problems"),
        d.problems.clone(),
        s("--teacher"),
        d.teacher.clone(),
        s("--samples"),
        s(d.samples),
        s("--select"),
        d.select.clone(),
        s("--seed"),
        s(d.seed),
        s("--out"),
        path_arg(&traces),
    ];
    if let Some(m) = &d.model {
        dargs.extend([s("--model"), m.clone()]);
    }
    if let Some(t) = d.temperature {
        dargs.extend([s("--temperature"), s(t)]);
    }
    if let Some(t) = d.max_tokens {
        dargs.extend([s("--max-tokens"), s(t)]);
    }
    if let Some(n) = d.limit {
        dargs.extend([s("--limit"), s(n)]);
    }
    go(
        &mut runner,
        Stage {
            name: "distill".into(),
            title: format!("distill traces from {}", d.teacher),
            args: dargs,
            inputs: spec_file(&d.problems)?.into_iter().collect(),
            outputs: vec![traces.clone()],
            resume: None,
            clear: vec![],
        },
    )?;

    // 2. Label.
    let label_dir = run.join("label");
    let compressed = label_dir.join("compressed.jsonl");
    let ratios: Vec<String> = p.label.ratios.iter().map(|r| r.to_string()).collect();
    let mut largs = vec![
        s("label"),
        s("--in"),
        path_arg(&traces),
        s("--scorer"),
        p.label.scorer.clone(),
        s("--ratios"),
        ratios.join(","),
        s("--out"),
        path_arg(&label_dir.join("labeled.jsonl")),
        s("--report"),
        path_arg(&label_dir.join("report.json")),
        s("--variants-out"),
        path_arg(&compressed),
        s("--keep-original"),
    ];
    if p.label.scorer == "rules" {
        largs.extend([s("--tokenizer"), path_arg(&p.model)]);
    }
    if p.label.granularity != "words" {
        largs.extend([s("--granularity"), p.label.granularity.clone()]);
    }
    go(
        &mut runner,
        Stage {
            name: "label".into(),
            title: format!(
                "label and compress the traces (ratios {})",
                ratios.join(", ")
            ),
            args: largs,
            inputs: vec![traces.clone()],
            outputs: vec![compressed.clone()],
            resume: None,
            clear: vec![],
        },
    )?;

    // 3. Students.
    let exports = run.join("exports");
    let merged = exports.join("b-merged");
    let data_of = |st: &Student| -> Result<Vec<PathBuf>> {
        Ok(match st.name {
            "a-full" => vec![traces.clone()],
            "b-compressed" => vec![compressed.clone()],
            _ => {
                let mut v = vec![merged.clone()];
                v.extend(spec_file(&p.grpo.problems)?);
                v
            }
        })
    };
    for (st, recipe) in students.iter().zip(&recipes) {
        if st.name == "c-grpo" {
            go(
                &mut runner,
                export_stage(
                    "b-compressed",
                    &students[1].recipe.run_dir(),
                    &merged,
                    true,
                    "none",
                ),
            )?;
        }
        let mut inputs = vec![recipe.clone()];
        inputs.extend(data_of(st)?);
        go(&mut runner, train_stage(st, recipe, inputs)?)?;
    }

    // 4. Export every student for the edge.
    let q = p.export.quantize.as_str();
    let tag = if q == "none" { "f32" } else { q };
    let ggufs: Vec<PathBuf> = students
        .iter()
        .map(|st| exports.join(format!("{}.{tag}.gguf", st.name)))
        .collect();
    for (st, gguf) in students.iter().zip(&ggufs) {
        go(
            &mut runner,
            export_stage(st.name, &st.recipe.run_dir(), gguf, false, q),
        )?;
    }

    // 5. Evaluate: full cache, then the pruned one at a fraction of it.
    let eval_dir = run.join("eval");
    std::fs::create_dir_all(&eval_dir)
        .with_context(|| format!("creating {}", eval_dir.display()))?;
    let e = &p.eval;
    let eval_args = |model: &Path, out: &Path, ratio: Option<f64>, budget: Option<usize>| {
        let mut a = vec![
            s("eval"),
            s("--model"),
            path_arg(model),
            s("--dataset"),
            e.problems.clone(),
            s("--max-new-tokens"),
            s(e.max_new_tokens),
            s("--out"),
            path_arg(out),
        ];
        if e.batch > 1 {
            a.extend([s("--batch"), s(e.batch)]);
        }
        if p.device != "flex" {
            a.extend([s("--device"), p.device.clone()]);
        }
        if let Some(n) = e.limit {
            a.extend([s("--limit"), s(n)]);
        }
        if let Some(sys) = &p.system {
            a.extend([s("--system"), sys.clone()]);
        }
        if let Some(r) = ratio {
            a.extend([s("--ratio"), s(r)]);
        }
        if let Some(b) = budget {
            a.extend([s("--budget"), s(b)]);
        }
        a
    };
    // (key in the paired tests, student, policy, budget, output)
    let mut evals: Vec<(String, String, String, Option<usize>, PathBuf)> = Vec::new();
    // `pruned`: the budget and, for a sweep point, the share of the cache it was sized for.
    let mut eval_stage = |runner: &mut Runner,
                          who: &str,
                          model: &Path,
                          ratio: Option<f64>,
                          budget: Option<usize>,
                          pruned: Option<(usize, Option<f64>)>|
     -> Result<()> {
        let policy = if pruned.is_some() {
            e.kv_policy.as_str()
        } else {
            "full"
        };
        let share = pruned.and_then(|(_, f)| f);
        let tag = match share {
            Some(f) => format!("{policy}-{:.0}", 100.0 * f),
            None => policy.to_string(),
        };
        let out = eval_dir.join(format!("{who}.{tag}.jsonl"));
        let mut a = eval_args(model, &out, ratio, budget);
        if let Some((kb, _)) = pruned {
            a.extend([s("--kv-policy"), s(policy), s("--kv-budget"), s(kb)]);
        }
        go(
            runner,
            Stage {
                name: format!("eval-{who}-{tag}"),
                title: match (pruned, share) {
                    (Some((kb, _)), Some(f)) => format!(
                        "evaluate {who} with {policy} at {:.0}% of the cache (budget {kb})",
                        100.0 * f
                    ),
                    (Some((kb, _)), None) => format!("evaluate {who} with {policy} (budget {kb})"),
                    (None, _) => format!("evaluate {who} with the full cache"),
                },
                args: a,
                inputs: vec![model.to_path_buf()],
                outputs: vec![out.clone()],
                resume: None,
                clear: vec![],
            },
        )?;
        let key = match share {
            Some(f) => format!("{who}/{policy}@{:.0}%", 100.0 * f),
            None => format!("{who}/{policy}"),
        };
        evals.push((
            key,
            who.to_string(),
            policy.to_string(),
            pruned.map(|p| p.0),
            out,
        ));
        Ok(())
    };
    if e.base {
        eval_stage(&mut runner, "base", &p.model, None, None, None)?;
    }
    for (i, (st, gguf)) in students.iter().zip(&ggufs).enumerate() {
        eval_stage(&mut runner, st.name, gguf, st.ratio, st.budget, None)?;
        let full_out = eval_dir.join(format!("{}.full.jsonl", st.name));
        let full_entries = if args.dry_run {
            0.0 // sized from the full-cache evaluation when it has run
        } else {
            mean_entries(&full_out)?
        };
        // The pruned cache at `kv_fraction`, and student (c), the claim's, also at the
        // sweep's shares: where its accuracy breaks.
        let sweep = e.sweep.iter().filter(|_| i + 1 == students.len());
        let shares = std::iter::once((e.kv_fraction, None)).chain(sweep.map(|&f| (f, Some(f))));
        for (f, tag) in shares {
            let kb = pruned_budget(&e.kv_policy, full_entries, f);
            eval_stage(
                &mut runner,
                st.name,
                gguf,
                st.ratio,
                st.budget,
                Some((kb, tag)),
            )?;
        }
    }

    if args.dry_run {
        eprintln!(
            "dry run: nothing was run (the students' recipes are in {})",
            run.join("recipes").display()
        );
        return Ok(());
    }

    // 6. The results.
    let mut rows = Vec::new();
    let mut lines: Vec<(String, Vec<EvalLine>)> = Vec::new();
    for (key, who, policy, kb, out) in &evals {
        let l = results::read_eval(out)?;
        rows.push(Row::new(who, policy, *kb, &l));
        lines.push((key.clone(), l));
    }
    let get = |k: &str| {
        lines
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, l)| l.as_slice())
    };
    let pol = e.kv_policy.as_str();
    let mut pairs = vec![
        ("a-full/full".to_string(), "b-compressed/full".to_string()),
        ("a-full/full".to_string(), "c-grpo/full".to_string()),
        ("b-compressed/full".to_string(), "c-grpo/full".to_string()),
    ];
    for st in &students {
        pairs.push((format!("{}/full", st.name), format!("{}/{pol}", st.name)));
    }
    for (key, ..) in evals.iter().filter(|(k, ..)| k.contains('@')) {
        let who = key.split('/').next().unwrap_or_default();
        pairs.push((format!("{who}/full"), key.clone()));
    }
    if e.base {
        pairs.insert(0, ("base/full".into(), "a-full/full".into()));
    }
    let tests: Vec<Paired> = pairs
        .iter()
        .filter_map(|(x, y)| Some((x, get(x)?, y, get(y)?)))
        .map(|(x, lx, y, ly)| results::paired(x, lx, y, ly))
        .collect::<laconic_train::Result<_>>()?;
    let json_rows = serde_json::to_vec_pretty(&rows)?;
    laconic_train::checkpoint::write_atomic(&run.join("results.json"), &json_rows)?;
    results::plot_accuracy_vs_length(&rows, &run.join("accuracy_vs_length.svg"))?;
    let grpo_metrics = students[2].recipe.run_dir().join("metrics.jsonl");
    let grpo_steps = results::plot_grpo_lengths(&grpo_metrics, &run.join("grpo_lengths.svg"))?;
    let seconds: f64 = timings.iter().map(|t| t.1).sum();
    let keyed: Vec<(&str, &Row)> = evals.iter().map(|e| e.0.as_str()).zip(&rows).collect();
    let claims = claims(&keyed, &tests, pol);
    let mut md = format!(
        "# {} results\n\nProblems: `{}`{}. Stages took {} in total (each stage's last run; \
         this invocation {}). Peak KV is the mean over problems of the most bytes the \
         cache held; decode tok/s is one core's throughput (generated tokens over decode \
         seconds, a batched step's time split among its sequences).\n\n",
        p.name,
        e.problems,
        e.limit.map(|n| format!(" (first {n})")).unwrap_or_default(),
        duration(seconds),
        duration(started.elapsed().as_secs_f64())
    );
    md.push_str(&results::markdown(&rows, &tests));
    md.push_str("\n## The claim\n\n");
    for c in &claims {
        md.push_str(&format!("- {c}\n"));
    }
    md.push_str(
        "\nPlots: `accuracy_vs_length.png` (accuracy against mean reasoning tokens), \
         `grpo_lengths.png` (reasoning length per budget bucket against GRPO step).\n",
    );
    laconic_train::checkpoint::write_atomic(&run.join("results.md"), md.as_bytes())?;
    let summary = json!({
        "pipeline": path_arg(&args.pipeline),
        "size": args.size,
        "rows": rows,
        "paired": tests,
        "claims": claims,
        "grpo_steps_plotted": grpo_steps,
        "stages": timings.iter().map(|(n, sec, skipped)| json!({"stage": n, "seconds": sec, "skipped_now": skipped})).collect::<Vec<_>>(),
        "total_seconds": seconds,
    });
    laconic_train::checkpoint::write_atomic(
        &run.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    println!("{md}");
    eprintln!(
        "results: {} ({} and {}, plots beside them)",
        run.join("results.md").display(),
        run.join("results.json").display(),
        run.join("summary.json").display()
    );
    Ok(())
}

/// `42 s`, `12.5 min`.
fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// The headline figures, stated against the goal: (c) reasons in at least 50% fewer tokens
/// than (a) with accuracy within 1 point and no significant paired difference; with the
/// pruned cache its accuracy is within 1 point of the full cache; then, for the sweep's
/// larger caches, how far student c's accuracy is from the full cache's. `rows` are keyed as
/// the paired tests name them (`c-grpo/rkv@50%` for a sweep point).
fn claims(rows: &[(&str, &Row)], tests: &[Paired], policy: &str) -> Vec<String> {
    let find = |a: &str, b: &str| tests.iter().find(|t| t.a == a && t.b == b);
    let row = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1);
    let share = |full: &Row, pruned: &Row| {
        if full.peak_kv_bytes > 0.0 {
            pruned.peak_kv_bytes / full.peak_kv_bytes
        } else {
            0.0
        }
    };
    let mut out = Vec::new();
    if let Some(t) = find("a-full/full", "c-grpo/full") {
        let shorter = -t.length_change;
        let met = shorter >= 0.5 && t.difference >= -0.01 && t.p_value >= 0.05;
        out.push(format!(
            "{}: student c reasons in {:.0}% {} tokens than student a; accuracy {:+.1} pt \
             (95% CI {:+.1} to {:+.1}), McNemar p = {:.3} (goal: ≥50% fewer, within 1 pt, no \
             significant difference)",
            if met { "MET" } else { "MISSED" },
            100.0 * shorter.abs(),
            if shorter >= 0.0 { "fewer" } else { "more" },
            100.0 * t.difference,
            100.0 * t.difference_ci95[0],
            100.0 * t.difference_ci95[1],
            t.p_value
        ));
    }
    let key = format!("c-grpo/{policy}");
    if let (Some(t), Some(full), Some(pruned)) =
        (find("c-grpo/full", &key), row("c-grpo/full"), row(&key))
    {
        let met = t.difference.abs() <= 0.01;
        out.push(format!(
            "{}: with {policy} at {:.0}% of the full cache's peak bytes, student c's accuracy \
             is {:+.1} pt from the full cache (McNemar p = {:.3}; goal: within 1 pt)",
            if met { "MET" } else { "MISSED" },
            100.0 * share(full, pruned),
            100.0 * t.difference,
            t.p_value
        ));
    }
    let sweep: Vec<String> = tests
        .iter()
        .filter(|t| t.a == "c-grpo/full" && t.b.starts_with(&format!("{key}@")))
        .filter_map(|t| {
            let (full, pruned) = (row(&t.a)?, row(&t.b)?);
            Some(format!(
                "budget {} ({:.0}% of the peak bytes) {:+.1} pt (p = {:.3})",
                pruned.kv_budget?,
                100.0 * share(full, pruned),
                100.0 * t.difference,
                t.p_value
            ))
        })
        .collect();
    if !sweep.is_empty() {
        out.push(format!(
            "Where it breaks: student c with {policy} at larger budgets, against its full cache: {}",
            sweep.join(", ")
        ));
    }
    out
}
