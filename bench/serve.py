"""Serving many adapters over one base model: tailorlm's mixed batches against PEFT (issue 12).

    OMP_NUM_THREADS=2 .venv/bin/python bench/serve.py [--requests 96] [--concurrency 16]
                                                      [--http] [--work DIR] [--json FILE]

The workload is classification, sst2 test sentences, each request naming one adapter and
answered with a label (the label's log-likelihood after the adapter's prompt). Eight adapters on
smollm2-135m, two of each kind, fitted for one short epoch on 16 rows (they cost the same to
run as adapters fitted longer):

    prompt       few_shot (4 demonstrations: a longer text prompt), seeds 0 and 1
    soft_prompt  20 virtual tokens, seeds 0 and 1
    prefix       10 virtual positions per layer, seeds 0 and 1
    lora         r=8 on the seven projections, seeds 0 and 1

Part 1, in process (what the server's worker thread does with a full queue): the same request
stream through `BatchEngine.classify` in batches of --concurrency rows, for the base alone, one
adapter of each kind, 1/2/4/8 adapters mixed (uniform popularity, and skewed: adapter i drawn
with weight 1/(i+1)), and LoRA only. Peers, on the same rows and prompts:

    peft-switch   what a user gets today from PEFT: one PeftModel per kind of adapter (PEFT
                  cannot hold LoRA and prompt-learning adapters in one model), `set_adapter`
                  before each request, one request per forward pass
    peft-mixed    PEFT's own mixed LoRA batch: `model(..., adapter_names=[...])`, batches of
                  --concurrency rows (LoRA only: PEFT mixes nothing else)

Goals (issue 12): 8 adapters of all four kinds mixed >= 0.8x the same load on one adapter (the
harmonic mean of the one-adapter rows of the four kinds: the time the same requests would take
if each kind's share ran on its own adapter), >= 3x peft-switch; LoRA-only mixed >= peft-mixed.

The generation workload (--generation): eight generation adapters of the same four kinds
fitted the same way on 16 e2e rows (prompt_template for the prompt kind), each request a raw
prompt (GEN_PROMPT around an e2e input) decoded greedily through the adapter's weights and
virtual tokens (a text-prompt adapter adds nothing to a raw prompt: that kind is the base) up
to --max-tokens tokens or the adapter's stop string (a newline). tailorlm decodes the stream with
continuous batching (requests join the running batch at each step, --concurrency rows at most);
peft-switch runs `generate` per request after `set_adapter`, told to make exactly as many tokens
as tailorlm's answer had (the same work).

Part 2 (--http): `tailor serve` started on 127.0.0.1 with the eight adapters, driven by the
official `openai` client at --concurrency concurrent requests: throughput and p50/p95 latency per
mix, the base model as a row too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from common import backend as load_base, task as load_data  # noqa: E402
from tailorlm.engine.prompt import prompt_ids  # noqa: E402
from tailorlm.methods import get_method  # noqa: E402
from tailorlm.methods.artifact import build_card, load_adapter, save_adapter  # noqa: E402

KINDS = {  # name prefix -> (method, config)
    "prompt": ("few_shot", {"n_demos": 4, "n_candidates": 1, "calibrate": "off",
                            "template": "default"}),
    "soft": ("soft_prompt", {"epochs": 1, "lr_factors": [1.0], "refit": False, "patience": 0,
                             "template": "default"}),
    "prefix": ("prefix", {"epochs": 1, "lr_factors": [1.0], "refit": False, "patience": 0,
                          "template": "default"}),
    "lora": ("lora", {"epochs": 1, "lr_factors": [1.0], "refit": False, "patience": 0,
                      "template": "default"}),
}


def make_adapters(base, train, work: Path, kinds: dict = KINDS,
                  prefix: str = "") -> dict[str, Path]:
    """Two adapters of each kind, fitted briefly on 16 rows and saved as tailorlm adapter
    folders (kept in `work`: a rerun fits nothing)."""
    rows = train.with_examples(train.examples[:16])
    folders = {}
    for kind, (method, config) in kinds.items():
        spec = get_method(method)
        for seed in (0, 1):
            name = f"{prefix}{kind}-{seed}"
            folder = work / name
            if not (folder / "adapter.json").is_file():
                adapter = spec.fit(base, rows, None, spec.config.from_dict(config), seed=seed)
                save_adapter(adapter, folder, build_card(adapter, base, rows, train=rows))
            folders[name] = folder
    return folders


GEN_KINDS = {  # the same kinds for a generation task: the prompt kind is a fixed template
    "prompt": ("prompt_template", {"template": "default"}),
    **{k: v for k, v in KINDS.items() if k != "prompt"},
}


GEN_PROMPT = "Write a review of this restaurant ({x}).\nReview: The"


def run_tailor_generate(engine, served, stream, batch: int, max_tokens: int) -> dict:
    """The stream through one engine.generate call with continuous batching: `batch` rows
    start, the rest join at decoding steps as rows finish (what the server's worker does)."""
    from tailorlm.engine.mixed import GenerateRequest

    def request(item):
        return GenerateRequest(served[item[0]], prompt=GEN_PROMPT.format(x=item[1]),
                               max_tokens=max_tokens, temperature=0.0)

    waiting = list(stream[batch:])

    def admit(room: int):
        taken = [request(x) for x in waiting[:room]]
        del waiting[:room]
        return taken

    start = time.perf_counter()
    out = engine.generate([request(x) for x in stream[:batch]], admit=admit)
    wall = time.perf_counter() - start
    tokens = [r.completion_tokens for r in out]
    return {"rps": len(stream) / wall, "tokens_per_s": sum(tokens) / wall, "tokens": tokens,
            "texts": [r.text.strip() for r in out]}


def streams(names: list[str], texts: list[str], n: int, skewed: bool, seed: int = 0):
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(names))] if skewed else None
    return [(rng.choices(names, weights)[0], texts[i % len(texts)]) for i in range(n)]


def mixes(names: list[str], prefix: str = "") -> dict[str, tuple[list[str], bool]]:
    by_kind = {k: [n for n in names if n.startswith(prefix + k)] for k in KINDS}
    one_each = [v[0] for v in by_kind.values()]
    return {
        **{f"1 adapter: {k}": ([v[0]], False) for k, v in by_kind.items()},
        "2 mixed (prompt, lora)": ([by_kind["prompt"][0], by_kind["lora"][0]], False),
        "4 mixed (one per kind)": (one_each, False),
        "8 mixed, uniform": (names, False),
        "8 mixed, skewed": (names, True),
        "lora only (2)": (by_kind["lora"], False),
    }


# -- tailorlm: the batch engine, as the server's worker runs it ---------------------------------

def run_tailor(engine, served, stream, batch: int) -> dict:
    from tailorlm.engine.mixed import ClassifyRequest

    times, labels = [], []
    start = time.perf_counter()
    for i in range(0, len(stream), batch):
        chunk = stream[i:i + batch]
        t0 = time.perf_counter()
        out = engine.classify([ClassifyRequest(served[a], text) for a, text in chunk])
        times.append(time.perf_counter() - t0)
        labels += [r.label for r in out]
    wall = time.perf_counter() - start
    return {"rps": len(stream) / wall, "batch_ms_p50": 1000 * statistics.median(times),
            "labels": labels}


def run_base(engine, stream, batch: int, max_tokens: int = 1) -> dict:
    from tailorlm.engine.mixed import GenerateRequest

    start = time.perf_counter()
    for i in range(0, len(stream), batch):
        engine.generate([GenerateRequest(engine.base_served, prompt=text, max_tokens=max_tokens,
                                         temperature=0.0) for _, text in stream[i:i + batch]])
    return {"rps": len(stream) / (time.perf_counter() - start)}


# -- PEFT, as a user would serve with it today ------------------------------------------------

class PeftPeer:
    """One PeftModel per kind of adapter over its own copy of the base (a LoRA PeftModel injects
    layers into the module it wraps), every adapter loaded by name; text prompts on the base."""

    def __init__(self, base, adapters: dict[str, object], folders: dict[str, Path]):
        import copy

        from peft import PeftModel

        self.base, self.adapters, self.models = base, adapters, {}
        for name, folder in folders.items():
            method = adapters[name].method
            if not (Path(folder) / "adapter_config.json").is_file():
                continue  # a text prompt: it runs on the base model
            if method not in self.models:
                model = PeftModel.from_pretrained(copy.deepcopy(base.model), folder,
                                                  adapter_name=name)
                self.models[method] = model.eval()
            else:
                self.models[method].load_adapter(folder, adapter_name=name)
        self.label_ids = None

    def ids(self, name: str, text: str) -> list[int]:
        from tailorlm.data.task import Example

        adapter = self.adapters[name]
        return prompt_ids(self.base, adapter.prompt(Example(input=text, target="")))

    def label_token_ids(self, name: str, task) -> list[int]:
        conts = self.adapters[name].continuations(task)
        ids = [self.base.encode(c) for c in conts]
        assert all(len(i) == 1 for i in ids), "bench assumes one-token labels (sst2)"
        return [i[0] for i in ids]

    @torch.inference_mode()
    def switch(self, stream, task) -> dict:
        """set_adapter, then one request per forward pass."""
        start, labels = time.perf_counter(), []
        for name, text in stream:
            method = self.adapters[name].method
            model = self.models.get(method, self.base.model)
            if method in self.models:
                model.set_adapter(name)
            ids = torch.tensor([self.ids(name, text)])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
            scores = torch.log_softmax(logits.float(), -1)[self.label_token_ids(name, task)]
            labels.append(task.labels[int(scores.argmax())])
        return {"rps": len(stream) / (time.perf_counter() - start), "labels": labels}

    @torch.inference_mode()
    def switch_generate(self, stream, tokens: list[int]) -> dict:
        """set_adapter, then `generate` one request at a time, greedy, exactly as many new
        tokens as tailorlm made for that request."""
        start, texts = time.perf_counter(), []
        for (name, text), n in zip(stream, tokens):
            method = self.adapters[name].method
            model = self.models.get(method, self.base.model)
            if method in self.models:
                model.set_adapter(name)
            ids = torch.tensor([self.base.bos_ids + self.base.encode(GEN_PROMPT.format(x=text))])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max(n, 1), min_new_tokens=max(n, 1),
                                 do_sample=False, pad_token_id=self.base.tokenizer.eos_token_id)
            texts.append(self.base.tokenizer.decode(out[0, -max(n, 1):], skip_special_tokens=True))
        wall = time.perf_counter() - start
        return {"rps": len(stream) / wall, "tokens_per_s": sum(tokens) / wall,
                "texts": [t.strip() for t in texts]}

    @torch.inference_mode()
    def mixed_lora(self, stream, task, batch: int) -> dict:
        """PEFT's mixed LoRA batch: left-padded rows, `adapter_names` per row."""
        model, pad = self.models["lora"], self.base.tokenizer.pad_token_id or 0
        start, labels = time.perf_counter(), []
        for i in range(0, len(stream), batch):
            chunk = stream[i:i + batch]
            rows = [self.ids(name, text) for name, text in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           adapter_names=[name for name, _ in chunk]).logits[:, -1]
            logp = torch.log_softmax(logits.float(), -1)
            for row, (name, _) in enumerate(chunk):
                labels.append(task.labels[int(logp[row, self.label_token_ids(name, task)].argmax())])
        return {"rps": len(stream) / (time.perf_counter() - start), "labels": labels}


# -- part 2: the HTTP server, driven by the openai client --------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(url: str, key: str, stream, concurrency: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=300)
    queue = list(enumerate(stream))
    latencies, errors = [], 0

    async def worker():
        nonlocal errors
        while queue:
            _, (model, text) = queue.pop()
            t0 = time.perf_counter()
            try:
                await client.completions.create(model=model, prompt=text, max_tokens=1,
                                                temperature=0)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # counted, not fatal: the table shows errors
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await client.close()  # inside the loop: its connections would close after the loop has
    latencies.sort()
    return {"rps": len(stream) / wall, "errors": errors,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else None}


def http_part(folders, texts, args) -> dict:
    port, key = free_port(), "bench-key"
    cmd = [sys.executable, "-m", "tailorlm.cli.main", "serve", "--model", "smollm2-135m",
           "--host", "127.0.0.1", "--port", str(port)]
    for name, folder in folders.items():
        cmd += ["--adapter", f"{name}={folder}"]
    env = {**os.environ, "TAILOR_API_KEY": key}
    log = tempfile.TemporaryFile()  # the server logs a line per request: a pipe would fill
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        import urllib.request

        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit("tailor serve exited: " + log.read().decode()[-2000:])
                time.sleep(1)
        else:
            raise SystemExit("tailor serve did not come up in 300 s")
        url, out = f"http://127.0.0.1:{port}/v1", {}
        names = list(folders)
        base = [("smollm2-135m", t) for t in texts[:args.requests]]
        out["base (no adapter)"] = asyncio.run(drive(url, key, base, args.concurrency))
        for label, (chosen, skewed) in mixes(names).items():
            stream = streams(chosen, texts, args.requests, skewed)
            out[label] = asyncio.run(drive(url, key, stream, args.concurrency))
            print(label, json.dumps(out[label]), flush=True)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def generation_part(base, engine, args, work: Path) -> dict:
    train, test = load_data("e2e", "test", n=max(args.requests, 64))
    texts = [e.input for e in test.examples]
    folders = make_adapters(base, train, work, GEN_KINDS, prefix="gen-")
    adapters = {n: load_adapter(f) for n, f in folders.items()}
    served = {n: engine.load(f, n) for n, f in folders.items()}
    peer = PeftPeer(base, adapters, folders)
    names, results = list(folders), {}
    warm = streams(names, texts, 4, False)
    run_tailor_generate(engine, served, warm, args.concurrency, 4)
    for label, (chosen, skewed) in mixes(names, prefix="gen-").items():
        stream = streams(chosen, texts, args.requests, skewed)
        ours = run_tailor_generate(engine, served, stream, args.concurrency, args.max_tokens)
        theirs = peer.switch_generate(stream, ours.pop("tokens"))
        same = [a == b for a, b in zip(ours.pop("texts"), theirs.pop("texts"))]
        results[label] = {"tailorlm": ours, "peft-switch": theirs,
                          "same_text_as_peft": sum(same) / len(same)}
        print("generation", label, json.dumps(results[label]), flush=True)
    results["goals"] = {f"gen_{k}": v for k, v in mixing_goals(results, "tokens_per_s").items()}
    print("generation goals", json.dumps(results["goals"]), flush=True)
    return results


def classification_part(base, engine, args, work: Path, folders, texts, test) -> dict:
    adapters = {n: load_adapter(f) for n, f in folders.items()}
    served = {n: engine.load(f, n) for n, f in folders.items()}
    peer = PeftPeer(base, adapters, folders)
    names, results = list(folders), {}
    warm = streams(names, texts, args.concurrency, False)
    run_tailor(engine, served, warm, args.concurrency)
    peer.switch(warm[:4], test)
    results["base (no adapter), 1 token"] = {"tailorlm": run_base(
        engine, streams(["base"], texts, args.requests, False), args.concurrency)}
    for label, (chosen, skewed) in mixes(names).items():
        stream = streams(chosen, texts, args.requests, skewed)
        row = {"tailorlm": run_tailor(engine, served, stream, args.concurrency),
               "peft-switch": peer.switch(stream, test)}
        if all(adapters[n].method == "lora" for n in chosen):
            row["peft-mixed"] = peer.mixed_lora(stream, test, args.concurrency)
        agree = [a == b for a, b in zip(row["tailorlm"]["labels"],
                                        row["peft-switch"]["labels"])]
        row["label_agreement_with_peft"] = sum(agree) / len(agree)
        for r in row.values():
            if isinstance(r, dict):
                r.pop("labels", None)
        results[label] = row
        print(label, json.dumps(row), flush=True)
    results["goals"] = {
        **mixing_goals(results, "rps"),
        "lora_mixed_vs_peft_mixed": (results["lora only (2)"]["tailorlm"]["rps"]
                                     / results["lora only (2)"]["peft-mixed"]["rps"]),
    }
    print("goals", json.dumps(results["goals"]), flush=True)
    return results


def mixing_goals(results: dict, rate: str) -> dict:
    """The issue's ratios for 8 adapters mixed: against one adapter (the harmonic mean of the
    one-adapter rows: the same requests with each kind's share on its own adapter, and the
    fastest one-adapter row), and against PEFT with set_adapter per request."""
    singles = [results[f"1 adapter: {k}"]["tailorlm"][rate] for k in KINDS]
    mixed8 = results["8 mixed, uniform"]
    return {"mixed8_vs_one_adapter": mixed8["tailorlm"][rate]
            / (len(singles) / sum(1 / x for x in singles)),
            "mixed8_vs_fastest_one_adapter": mixed8["tailorlm"][rate] / max(singles),
            "mixed8_vs_peft_switch": mixed8["tailorlm"][rate] / mixed8["peft-switch"][rate]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=96)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--http", action="store_true", help="also drive `tailor serve` over HTTP")
    p.add_argument("--generation", action="store_true", help="also the generation workload")
    p.add_argument("--no-classification", action="store_true",
                   help="skip the classification workload (part 1)")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--work", help="adapter folders (kept between runs; default: a temp folder)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    from tailorlm.engine.mixed import BatchEngine

    base = load_base()
    train, test = load_data("sst2", "test", n=max(args.requests, 64))
    texts = [e.input for e in test.examples]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        folders = make_adapters(base, train, work)
        print(f"adapters ready in {time.perf_counter() - t0:.0f} s", flush=True)
        engine = BatchEngine(base)
        out, goals = {"requests": args.requests, "concurrency": args.concurrency,
                      "threads": torch.get_num_threads()}, {}
        if not args.no_classification:
            out["classification"] = classification_part(base, engine, args, work, folders,
                                                        texts, test)
            goals.update(out["classification"].pop("goals"))
        if args.generation:
            out["generation"] = generation_part(base, engine, args, work)
            goals.update(out["generation"].pop("goals"))
        if args.http:
            out["http"] = http_part(folders, texts, args)
        out["goals"], out["load_average"] = goals, os.getloadavg()
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
