#!/usr/bin/env python3
"""GRPO throughput of Hugging Face TRL's `GRPOTrainer` on the CPU, the peer of a laconic GRPO run
(recipes/smollm2-135m-procedural-grpo.toml; scripts/grpo_throughput.py prints laconic's figures
in the same keys).

Setup and run, from the repository root::

    /work/pyenv/bin/pip install trl==1.16.0
    target/release/laconic distill --problems procedural:count=16,seed=2,difficulty=2 \
        --teacher procedural:verbose --samples 4 --out /tmp/trl/problems.jsonl --quiet
    /work/pyenv/bin/python scripts/bench_grpo_trl.py --problems /tmp/trl/problems.jsonl \
        --steps 3 --group 4 --prompts-per-step 2 --max-completion-length 192 --threads 2

Same work as laconic's GRPO: SmolLM2-135M-Instruct (F32 GGUF, dequantized by transformers),
LoRA r=16/alpha=32 on all linear layers, the recipe's system prompt, the question with
`[budget B]` on its last line (B drawn per problem from `--budgets` by laconic's seeded hash,
problems in laconic's epoch-0 order), G samples per prompt at temperature 0.8 / top-p 1,
reward = correct x (1 up to B tokens, else exp(-(L-B)/(0.25 B)); L without the final stop
token), clip 0.2, KL 0.04 to the base (adapter off), loss averaged over all sampled tokens
(TRL's `dapo`), AdamW lr 1e-4 (5 warm-up steps, cosine to 0.1x, grad norm 1), no activation
checkpointing. (TRL scales a group's rewards by the sample std, laconic by the population std.)

TRL 1.16's batch: `per_device_train_batch_size` counts completions, not prompts, and one
generation batch (that size x `gradient_accumulation_steps`) feeds each optimizer step; so
batch = G x prompts with accumulation 1 is one step of `prompts` prompts x G samples.

Printed (and written with `--json FILE`), one JSON object:
  train_seconds         wall time of `trainer.train()` (rollouts, reference and policy passes,
                        backward, optimizer); step_seconds splits it per optimizer step
  steps_per_minute      optimizer steps / train minutes
  rollout_seconds       time inside the model's `generate` calls (the rollouts)
  rollout_tokens        completion tokens those calls produced (up to and including the first
                        stop token; padding after it is not counted)
  rollout_tokens_per_s  rollout_tokens / rollout_seconds
  mean_completion_length, mean_reward
                        TRL's logged `completions/mean_length` (stop token included) and
                        `reward`, averaged over the steps
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

SYSTEM = ("Solve the problem step by step. Then write the final answer, a number alone, "
          "on the last line as `#### <answer>`.")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MASK = (1 << 64) - 1
NUMBER = re.compile(r"(?:(?<![\w)\]])-)?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<!\d)\.\d+")


def mix64(z: int) -> int:
    """SplitMix64's finaliser, as laconic's seeded choices use it (crates/laconic-train/src/reward.rs)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def budget_of(buckets: list[int], seed: int, index: int) -> int:
    """laconic's `BudgetBuckets::draw(seed, epoch 0, index)`."""
    return buckets[mix64((seed + index * 0xBF58476D1CE4E5B9) & MASK) % len(buckets)]


def epoch0_order(n: int, seed: int) -> list[int]:
    """laconic's problem order for epoch 0 (`grpo::step_problems`)."""
    return sorted(range(n), key=lambda i: mix64(seed ^ ((i * 0xD6E8FEB86659FD93) & MASK)))


def value(s: str | None) -> float | None:
    return float(s.replace(",", "").replace("$", "")) if s is not None else None


def first_number(text: str) -> str | None:
    m = NUMBER.search(text)
    return m.group(0) if m else None


def extract(text: str) -> str | None:
    """The answer, as laconic's gsm8k grader reads it: the first number after the last `####`,
    else after the last "answer is"/"final answer", else in the last \\boxed{}, else the last number."""
    if "####" in text and (n := first_number(text[text.rfind("####") + 4:])):
        return n
    lower = text.lower()
    ends = [lower.rfind(m) + len(m) for m in ("answer is", "final answer") if m in lower]
    if ends and (n := first_number(text[max(ends):])):
        return n
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed and (n := first_number(boxed[-1])):
        return n
    found = NUMBER.findall(text)
    return found[-1] if found else None


def gold_value(gold: str) -> float | None:
    return value(first_number(gold[gold.rfind("####") + 4:]) if "####" in gold else first_number(gold))


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", required=True, help="JSONL traces with `question` and `gold`")
    ap.add_argument("--model", default=str(root / "checkpoints/SmolLM2-135M-Instruct.F32.gguf"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--group", type=int, default=4, help="samples per prompt (G)")
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=192)
    ap.add_argument("--budgets", default="64,128")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    import datasets
    import transformers
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    buckets = [int(b) for b in args.budgets.split(",")]
    with open(args.problems, encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    rows = []
    for i in epoch0_order(len(problems), args.seed):
        b = budget_of(buckets, args.seed, i)
        user = f"{problems[i]['question'].rstrip()}\n[budget {b}]"
        rows.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                     "gold": str(problems[i]["gold"]), "budget": b})
    if len(rows) < args.prompts_per_step:
        sys.exit(f"{args.problems}: {len(rows)} problems, fewer than --prompts-per-step")

    model_dir, gguf = os.path.split(os.path.abspath(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, dtype=torch.float32)
    # transformers marks a GGUF model quantized and its Trainer refuses to train one; the weights
    # are plain float tensors after loading (F32 GGUF), so drop the mark.
    if getattr(model, "hf_quantizer", None) is not None:
        assert all(p.is_floating_point() for p in model.parameters()), "weights still quantized"
        model.hf_quantizer.remove_quantization_config(model)
        model.config._is_quantized = False
    eos = model.generation_config.eos_token_id
    stop_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"),
                *([eos] if isinstance(eos, int) else eos or [])}

    def reward(completions, completion_ids, gold, budget, **_):
        out = []
        for c, ids, g, b in zip(completions, completion_ids, gold, budget):
            text = c[-1]["content"] if isinstance(c, list) else c
            got, want = value(extract(text)), gold_value(g)
            if got is None or want is None or not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
                out.append(0.0)
                continue
            length = len(ids) - (1 if ids and ids[-1] in stop_ids else 0)
            out.append(1.0 if length <= b else math.exp(-(length - b) / (0.25 * b)))
        return out

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-grpo-trl-"),
        num_generations=args.group,
        per_device_train_batch_size=args.group * args.prompts_per_step,  # completions, not prompts
        gradient_accumulation_steps=1, num_iterations=1, shuffle_dataset=False,
        max_completion_length=args.max_completion_length,
        temperature=0.8, top_p=1.0, top_k=0, beta=0.04, epsilon=0.2, loss_type="dapo",
        learning_rate=1e-4, warmup_steps=5, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=args.steps, logging_steps=1, report_to="none", use_cpu=True, bf16=False, fp16=False,
        seed=args.seed, save_strategy="no", eval_strategy="no", dataloader_num_workers=0,
        activation_checkpointing=False)  # TRL turns it on by default; laconic keeps activations
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora)

    rollout = {"seconds": 0.0, "tokens": 0}
    generate = trainer.model.generate

    def timed_generate(*a, **kw):
        prompt_len = kw["input_ids"].shape[1] if "input_ids" in kw else a[0].shape[1]
        start = time.perf_counter()
        out = generate(*a, **kw)
        rollout["seconds"] += time.perf_counter() - start
        new = out[:, prompt_len:]
        is_stop = torch.isin(new, torch.tensor(sorted(stop_ids)))
        first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, new.shape[1])
        rollout["tokens"] += int(first.sum())
        return out

    trainer.model.generate = timed_generate

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, *_, **__):
            self.marks = [time.perf_counter()]

        def on_step_end(self, *_, **__):
            self.marks.append(time.perf_counter())

        def on_log(self, _args, state, _control, logs=None, **__):
            if logs and "reward" in logs:
                print(f"step {state.global_step}: {self.marks[-1] - self.marks[-2]:.1f} s, reward "
                      f"{logs['reward']:.3f}, length {logs['completions/mean_length']:.1f}", file=sys.stderr)

    clock = StepClock()
    trainer.remove_callback(PrinterCallback)  # its per-step dicts would go to stdout with the JSON
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(clock)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    shutil.rmtree(config.output_dir, ignore_errors=True)  # nothing is saved there
    if rollout["seconds"] == 0:
        sys.exit("the timed generate was never called: this TRL version generates some other way")

    logs = [h for h in trainer.state.log_history if "reward" in h]
    steps = trainer.state.global_step
    result = {
        "engine": "trl", "trl_version": trl.__version__, "torch_version": torch.__version__,
        "threads": args.threads, "group": args.group, "prompts_per_step": args.prompts_per_step,
        "max_completion_length": args.max_completion_length, "steps": steps, "train_seconds": train_seconds,
        "step_seconds": [b - a for a, b in zip(clock.marks, clock.marks[1:])],
        "steps_per_minute": 60.0 * steps / train_seconds,
        "rollout_seconds": rollout["seconds"],
        "rollout_tokens": rollout["tokens"],
        "rollout_tokens_per_s": rollout["tokens"] / rollout["seconds"] if rollout["seconds"] > 0 else 0.0,
        "mean_completion_length": sum(h["completions/mean_length"] for h in logs) / max(len(logs), 1),
        "mean_reward": sum(h["reward"] for h in logs) / max(len(logs), 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
