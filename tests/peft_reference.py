"""Label scores computed by PEFT itself, the reference that tailorlm's PEFT-format adapters match."""

from __future__ import annotations

import copy

import numpy as np
import torch


def peft_label_scores(backend, adapter_dir, prompts, continuations) -> np.ndarray:
    """Log-likelihood of each continuation after each Prompt, from `PeftModel.from_pretrained` on a
    copy of the backend's model: one plain forward per (prompt, label), no cache of ours."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(backend.model), str(adapter_dir)).eval()
    out = np.zeros((len(prompts), len(continuations)))
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = (backend.encode(p.shared) if p.shared else []) + backend.encode(p.own)
            for j, cont in enumerate(continuations):
                c = backend.encode(cont)
                full = torch.tensor([ids + c])
                logits = model(input_ids=full, attention_mask=torch.ones_like(full)).logits[0]
                # prompt tuning also returns the virtual tokens' logits: keep the text's
                logp = torch.log_softmax(logits[-full.shape[1]:].double(), -1)
                out[i, j] = sum(logp[len(ids) - 1 + t, c[t]].item() for t in range(len(c)))
    return out


def peft_loss_and_grad(backend, peft_config, weight: torch.Tensor, batch):
    """PEFT's training loss on a right-padded Batch (labels -100 off the targets) and its gradient
    with respect to the prompt encoder's embedding, set to `weight`, on a copy of the model."""
    from peft import get_peft_model

    model = get_peft_model(copy.deepcopy(backend.model), peft_config)
    embedding = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        embedding.copy_(weight)
    labels = torch.where(batch.target_mask.bool(), batch.input_ids, -100)
    loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 labels=labels).loss
    loss.backward()
    return loss.detach(), embedding.grad
