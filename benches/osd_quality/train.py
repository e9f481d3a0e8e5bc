#!/usr/bin/env python3
"""Train the routing adapters (LoRA and DoRA, r=8) on all-MiniLM-L6-v2 with PEFT.

Objective: cross-entropy over cosine(request, label description) / T, both
embedded by the adapted encoder (no head; see common.py).  Deterministic for
a given seed and thread count (CPU).

Writes (PEFT save_pretrained):
    tests/fixtures/trained/minilm-route-lora-r8/
    tests/fixtures/trained/minilm-route-dora-r8/
and benches/osd_quality/results/train.json (accuracies, settings, versions).

Usage: python train.py [--kinds lora,dora] [--epochs 4] [--lr 1e-3] [--seed 0]
Needs data/route-train.jsonl (python make_data.py).
"""

import argparse
import json
import os
import random
import time

import common

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGET_MODULES = ["query", "key", "value"]
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def peft_config(kind):
    from peft import LoraConfig
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                      target_modules=list(TARGET_MODULES),
                      use_dora=(kind == "dora"), bias="none")


def train_one(kind, train_rows, test_rows, args):
    from peft import PeftModel, get_peft_model
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok, base = common.load_base()
    model = get_peft_model(base, peft_config(kind))
    model.print_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps_per_epoch = (len(train_rows) + args.batch - 1) // args.batch
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / total))
    label_idx = {l: i for i, l in enumerate(common.LABELS)}
    rng = random.Random(args.seed)
    t0 = time.time()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train_rows)))
        rng.shuffle(order)
        loss_sum = 0.0
        for i in range(0, len(order), args.batch):
            chunk = [train_rows[j] for j in order[i:i + args.batch]]
            y = torch.tensor([label_idx[r["label"]] for r in chunk])
            lab = common.embed(model, tok, common.label_texts())
            lg = common.logits(model, tok, [r["text"] for r in chunk], lab)
            loss = F.cross_entropy(lg, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item() * len(chunk)
        acc, _ = common.accuracy(model, tok, test_rows)
        print(f"[{kind}] epoch {epoch + 1}/{args.epochs} loss "
              f"{loss_sum / len(train_rows):.4f} test acc {acc:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)

    out = os.path.join(common.TRAINED, f"minilm-route-{kind}-r8")
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    model.save_pretrained(out)
    # The generated model card may carry the local path of the base model.
    card = os.path.join(out, "README.md")
    if os.path.exists(card):
        text = open(card, encoding="utf-8").read().replace(common.model_dir(), BASE_NAME)
        open(card, "w", encoding="utf-8").write(text)

    # Judge what was saved, reloaded the way a user would.
    tok, base = common.load_base()
    reloaded = PeftModel.from_pretrained(base, out)
    acc, per_class = common.accuracy(reloaded, tok, test_rows)
    train_acc, _ = common.accuracy(reloaded, tok, train_rows)
    size = os.path.getsize(os.path.join(out, "adapter_model.safetensors"))
    print(f"[{kind}] saved {out} ({size} bytes): test acc {acc:.4f}, "
          f"train acc {train_acc:.4f}", flush=True)
    return {"dir": os.path.relpath(out, common.REPO), "test_acc": acc,
            "train_acc": train_acc, "per_class_test_acc": per_class,
            "adapter_bytes": size, "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="lora,dora")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    common.set_threads()
    try:
        torch.use_deterministic_algorithms(True)
    except Exception:
        pass
    train_rows = common.read_jsonl(common.TRAIN_SET)
    test_rows = common.read_jsonl(common.TEST_SET)
    tok, base = common.load_base()
    base_acc, base_pc = common.accuracy(base, tok, test_rows)
    print(f"[base] zero-shot test acc {base_acc:.4f}", flush=True)
    res_path = os.path.join(common.HERE, "results", "train.json")
    results = {}
    if os.path.exists(res_path):
        results = json.load(open(res_path)).get("adapters", {})
    for kind in args.kinds.split(","):
        results[kind] = train_one(kind, train_rows, test_rows, args)
    os.makedirs(os.path.dirname(res_path), exist_ok=True)
    with open(res_path, "w") as f:
        json.dump({"base_test_acc": base_acc, "base_per_class_test_acc": base_pc,
                   "adapters": results,
                   "settings": {"epochs": args.epochs, "lr": args.lr,
                                "batch": args.batch, "seed": args.seed,
                                "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                                "target_modules": TARGET_MODULES,
                                "temperature": common.TEMPERATURE,
                                "threads": common.THREADS,
                                "n_train": len(train_rows), "n_test": len(test_rows)},
                   "versions": common.versions()}, f, indent=2)
    print(f"wrote {res_path}")


if __name__ == "__main__":
    main()
