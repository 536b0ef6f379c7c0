"""Chat records as token ids, labels and padded batches.

The template is the one the seed's warmup trains on (LESS / Tulu)::

    <|system|>\\n{content}\\n<|user|>\\n{content}\\n<|assistant|>\\n{content}<eos>

Each piece is tokenized on its own, so the role tags are known exactly whatever the
tokenizer: their labels are -100 (no loss). ``full_sequence_prediction`` puts the loss on
every other token (the warmup's default); without it only the assistant turns carry loss
(the finetune's default, standard supervised finetuning). Scoring uses the same template,
so the gates are read on the text they were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stagewise.select.records import ChatRecord

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    labels: list[int]


def pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def encode(
    record: ChatRecord, tokenizer: Any, max_len: int, *, full_sequence: bool = True
) -> Encoded:
    ids: list[int] = []
    labels: list[int] = []
    eos = tokenizer.eos_token_id
    for message in record.messages:
        tag = tokenizer.encode(f"<|{message['role']}|>\n", add_special_tokens=False)
        ids += tag
        labels += [IGNORE] * len(tag)
        if message["role"] == "assistant":
            body = tokenizer.encode(message["content"], add_special_tokens=False)
            body += [eos] if eos is not None else []
        else:
            body = tokenizer.encode(message["content"] + "\n", add_special_tokens=False)
        ids += body
        learn = full_sequence or message["role"] == "assistant"
        labels += body if learn else [IGNORE] * len(body)
    return Encoded(ids[:max_len], labels[:max_len])


def label_tokens(item: Encoded) -> int:
    """Tokens that carry loss in the shifted cross-entropy (position 0 predicts nothing)."""
    return sum(1 for label in item.labels[1:] if label != IGNORE)


def collate(items: Sequence[Encoded], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding)."""
    width = max(len(item.ids) for item in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.ids)
        ids[row, :n] = torch.tensor(item.ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(item.labels, dtype=torch.long)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
