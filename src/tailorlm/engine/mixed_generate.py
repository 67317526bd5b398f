"""The decoding loop of the mixed engine, with rows that join and leave at any step.

    join(rows)   prefill the new rows (engine/mixed_batch.py: each after its own prefix), then
                 merge their cache into the running one: both are left-padded to the longer
                 length (attention mask 0), and stacked on the batch axis. Positions are per row
                 and explicit, so padding moves nothing.
    step         every running row picks its next token (engine/mixed_decode.py), finished rows
                 leave the batch and the cache, and the rest run one token further.

Before each step, `admit(room)` may hand over up to `room` more requests (continuous batching):
a server's requests that arrived while this loop ran start at the next step instead of waiting
for the whole batch to end. Caches whose layers are not plain DynamicLayers (sliding windows)
are not merged: such a model's rows run in batches of their own (`mergeable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tailorlm.engine.mixed_batch import Row, prefill
from tailorlm.engine.mixed_decode import RowDecoder, prompt_logprobs


@dataclass(eq=False)
class Job:
    req: object  # GenerateRequest
    row: Row
    decoder: RowDecoder
    prompt_ids: list[int]
    model: torch.nn.Module
    prompt_logprobs: list[float | None] | None = None
    result: object = field(default=None, repr=False)  # GenerateResult, once finished


def mergeable(model) -> bool:
    """Whether this model's caches can be padded and stacked (every layer a DynamicLayer)."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


class DecodeLoop:
    def __init__(self, model, banks, pad_id: int, max_batch: int,
                 finish: Callable[[Job], None]):
        self.model, self.banks, self.pad_id, self.max_batch = model, banks, pad_id, max_batch
        self.finish = finish  # called once per job as it finishes
        self.jobs: list[Job] = []  # running, in batch-row order
        self.cache = self.mask = self.next_pos = self.logits = None

    def run(self, jobs: list[Job], admit: Callable[[int], list[Job]] | None = None) -> None:
        self.join(jobs)
        while True:
            room = self.max_batch - len(self.jobs)
            if admit is not None and room > 0:
                self.join(admit(room))
            if not self.jobs:
                return
            for j, job in enumerate(self.jobs):
                d = job.decoder
                if job.req.max_tokens <= 0:
                    d.end("length")
                elif not d.poll_cancelled():
                    d.step(self.logits[j])
            keep = [j for j, job in enumerate(self.jobs) if not job.decoder.done]
            for job in self.jobs:
                if job.decoder.done:
                    self.finish(job)
            self.select(keep)
            if self.jobs:
                self.forward()

    def join(self, jobs: list[Job]) -> None:
        """Prefill `jobs` (echo rows apart: they keep every position's logits) and merge."""
        for echo in (False, True):
            part = [job for job in jobs if bool(job.req.echo) == echo]
            if not part:
                continue
            rows = [job.row for job in part]
            out, mask, positions = prefill(self.model, rows, self.pad_id, self.banks,
                                           all_logits=echo)
            if echo:
                T = out.logits.shape[1]
                for b, job in enumerate(part):
                    job.prompt_logprobs = prompt_logprobs(out.logits[b, T - len(job.row.own):],
                                                          job.row.own)
            self._merge(part, out.cache, mask, positions[:, -1:] + 1, out.logits[:, -1])

    def select(self, keep: list[int]) -> None:
        """Keep only these batch rows (in the cache too)."""
        if len(keep) == len(self.jobs):
            return
        self.jobs = [self.jobs[j] for j in keep]
        if not keep:
            self.cache = self.mask = self.next_pos = self.logits = None
            return
        sel = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.mask, self.next_pos, self.logits = self.mask[sel], self.next_pos[sel], self.logits[sel]

    def forward(self) -> None:
        device = self.mask.device
        ids = torch.tensor([job.decoder.picked[-1] for job in self.jobs], device=device)
        if self.banks is not None:
            self.banks.use([job.row.slot for job in self.jobs])
        self.mask = torch.cat([self.mask, torch.ones_like(self.next_pos)], dim=1)
        out = self.model(input_ids=ids[:, None], attention_mask=self.mask,
                         position_ids=self.next_pos, cache=self.cache, use_cache=True,
                         logits_to_keep=1)
        self.logits, self.cache, self.next_pos = out.logits[:, -1], out.cache, self.next_pos + 1

    def _merge(self, jobs, cache, mask, next_pos, logits) -> None:
        if not self.jobs:
            self.jobs, self.cache, self.mask = list(jobs), cache, mask
            self.next_pos, self.logits = next_pos, logits
            return
        L, L2 = self.mask.shape[1], mask.shape[1]
        M = max(L, L2)
        for mine, new in zip(self.cache.layers, cache.layers):  # (B, heads, L, head_dim)
            mine.keys = torch.cat([F.pad(mine.keys, (0, 0, M - L, 0)),
                                   F.pad(new.keys, (0, 0, M - L2, 0))])
            mine.values = torch.cat([F.pad(mine.values, (0, 0, M - L, 0)),
                                     F.pad(new.values, (0, 0, M - L2, 0))])
        self.mask = torch.cat([F.pad(self.mask, (M - L, 0)), F.pad(mask, (M - L2, 0))])
        self.next_pos = torch.cat([self.next_pos, next_pos])
        self.logits = torch.cat([self.logits, logits])
        self.jobs += list(jobs)
