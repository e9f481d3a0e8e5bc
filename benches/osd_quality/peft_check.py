#!/usr/bin/env python3
"""Does PEFT itself read `expertui convert --to peft` exports of compressed experts
the way `expertui fuse` applies them?

For each trained adapter (tests/fixtures/trained/minilm-route-{lora,dora}-r8) and
each of `osd compress --method osd --dtype bf16 --rank 4` and
`--method truncsvd --dtype bf16 --rank 4` (plus osd bf16 --max-bytes 115000, whose
relaxation search gives per-module ranks, so rank_pattern is exercised; DoRA: with --base <model.safetensors>,
the merged DoRA delta is compressed):

  1. `expertui convert X.expert --to peft -o DIR`
  2. `PeftModel.from_pretrained(base, DIR)` -> every lora_A / lora_B tensor of
     the file must be the one PEFT loaded (no missing / unexpected keys), every
     module's scale must be 1 (alpha_pattern = rank_pattern) -> merge_and_unload()
  3. `expertui fuse X.expert --base model.safetensors -o merged.safetensors`
  4. per target tensor: max |W_peft − W_fuse|, next to max |W| (weight scale)
     and max |W_peft − W_base| (the delta's scale).

bf16 factors are exact in f32, so the two merges should differ only by f32
rounding of B·A + W (≈ 1e-7 of the weight scale).  Any PEFT refusal, missing
key, or a difference above TOL × weight scale makes the script exit 1.

Output: results/peft_check.{md,json}.
Usage: python peft_check.py [--keep-work DIR]   (EXPERTUI=/path overrides the CLI)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

import torch  # noqa: E402

TOL = 1e-5          # max |W_peft − W_fuse| / max |W| allowed
# (method, dtype, rank, extra flags).  The third: osd bf16 under --max-bytes 115000
# (about ¼ of the f32 reference), where the relaxation search gives per-module
# ranks, so the export's rank_pattern / alpha_pattern are exercised.
CASES = [("osd", "bf16", 4, []), ("truncsvd", "bf16", 4, []),
         ("osd", "bf16", None, ["--max-bytes", "115000"])]
ADAPTERS = ["lora", "dora"]


def cli():
    return os.environ.get("EXPERTUI") or os.path.join(common.REPO, "target", "release", "expertui")


def run(args):
    cmd = [cli(), "--headless"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"FAILED (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def base_name(key):
    """'base_model.model.encoder…query.lora_A.weight' -> 'encoder…query.weight'."""
    k = key.removeprefix("base_model.model.")
    for part in (".lora_A.weight", ".lora_B.weight"):
        if k.endswith(part):
            return k[:-len(part)] + ".weight"
    return None


def check_case(kind, method, dtype, rank, extra, work, base_file, base_sd):
    from peft import PeftModel
    from safetensors.torch import load_file
    adapter = os.path.join(common.TRAINED, f"minilm-route-{kind}-r8")
    is_dora = json.load(open(os.path.join(adapter, "adapter_config.json"))).get("use_dora", False)
    tag = f"{kind}-{method}-{dtype}-" + (f"r{rank}" if rank else "maxbytes")
    expert = os.path.join(work, f"{tag}.expert")
    cmd = (["osd", "compress", adapter, "-o", expert, "--method", method, "--dtype", dtype]
           + (["--rank", str(rank)] if rank else []) + extra + ["--json"]
           + (["--base", base_file] if is_dora else []))
    info = json.loads(run(cmd))
    if info.get("skipped"):
        raise SystemExit(f"FAILED: {tag}: compress skipped modules {info['skipped']}")

    # 1-2. PEFT export and load
    peft_dir = os.path.join(work, f"{tag}-peft")
    shutil.rmtree(peft_dir, ignore_errors=True)
    run(["convert", expert, "--to", "peft", "-o", peft_dir])
    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    problems = []
    if cfg.get("use_dora"):
        problems.append("exported config has use_dora = true (expected a plain LoRA)")
    rp, ap = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    if float(cfg["lora_alpha"]) != float(cfg["r"]):
        problems.append(f"lora_alpha {cfg['lora_alpha']} != r {cfg['r']}")
    for k, v in rp.items():
        if float(ap.get(k, -1)) != float(v):
            problems.append(f"alpha_pattern[{k}] = {ap.get(k)} != rank {v}")
    file_sd = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    file_dtypes = sorted({str(v.dtype) for v in file_sd.values()})

    base = common.load_base()[1]
    try:
        model = PeftModel.from_pretrained(base, peft_dir)
    except Exception as e:
        raise SystemExit(f"FAILED: PEFT refused {peft_dir} ({tag}): {type(e).__name__}: {e}")
    # every tensor in the file must be what PEFT holds (catches silently dropped keys)
    params = dict(model.named_parameters())
    n_loaded = 0
    for k, v in file_sd.items():
        pk = k.replace(".weight", ".default.weight")
        if pk not in params:
            problems.append(f"file tensor {k} has no PEFT parameter {pk}")
            continue
        if not torch.equal(params[pk].detach().float(), v.float()):
            problems.append(f"PEFT parameter {pk} differs from the file")
        n_loaded += 1
    n_lora_params = sum(1 for n in params if ".lora_A." in n or ".lora_B." in n)
    if n_lora_params != len(file_sd):
        problems.append(f"PEFT model has {n_lora_params} lora tensors, file has {len(file_sd)}")
    scales = {}
    for n, m in model.named_modules():
        if hasattr(m, "scaling") and isinstance(getattr(m, "scaling"), dict) and "default" in m.scaling:
            scales[n] = m.scaling["default"]
    bad_scale = {n: s for n, s in scales.items() if abs(s - 1.0) > 1e-12}
    if bad_scale:
        problems.append(f"modules with scale != 1: {bad_scale}")
    merged = model.merge_and_unload()
    peft_sd = {k: v.detach().float() for k, v in merged.state_dict().items()}

    # 3. fuse
    fused_path = os.path.join(work, f"{tag}-fused.safetensors")
    run(["fuse", expert, "--base", base_file, "-o", fused_path])
    fused = load_file(fused_path)
    fused = {k.removeprefix("bert.").removeprefix("model."): v.float() for k, v in fused.items()}

    # 4. compare the target tensors
    targets = sorted({base_name(k) for k in file_sd if base_name(k)})
    rows = []
    for t in targets:
        if t not in fused:
            problems.append(f"fuse output lacks {t}")
            continue
        wp, wf, w0 = peft_sd[t], fused[t], base_sd[t].float()
        d = (wp - wf).abs().max().item()
        scale = w0.abs().max().item()
        delta = (wp - w0).abs().max().item()
        rows.append({"tensor": t, "max_abs_diff": d, "weight_max_abs": scale,
                     "rel_to_weight": d / scale, "delta_max_abs": delta,
                     "rel_to_delta": d / delta if delta else float("inf")})
    # non-target tensors must be untouched by both
    for k, v in fused.items():
        if k in base_sd and k not in targets and not torch.equal(v, base_sd[k].float()):
            problems.append(f"fuse changed a non-target tensor {k}")
    worst = max(r["rel_to_weight"] for r in rows) if rows else float("inf")
    if worst > TOL:
        problems.append(f"max |W_peft − W_fuse| / max|W| = {worst:.2e} > {TOL:g}")
    return {"adapter": f"minilm-route-{kind}-r8", "method": method, "dtype": dtype,
            "rank": rank if rank else " ".join(extra),
            "compress_cmd": "expertui --headless " + " ".join(
                os.path.basename(a) if a.startswith(("/", work)) else a for a in cmd),
            "cli": {k: info.get(k) for k in ("method", "dtype", "rank", "relaxed_rank",
                                             "tensor_bytes", "file_bytes", "rel_error")},
            "peft_r": cfg.get("r"), "peft_lora_alpha": cfg.get("lora_alpha"),
            "rank_pattern": rp, "file_dtypes": file_dtypes,
            "tensors_in_file": len(file_sd), "tensors_matched_in_peft": n_loaded,
            "max_rel_to_weight": worst, "max_abs_diff": max(r["max_abs_diff"] for r in rows),
            "problems": problems, "tensors": rows}


def write_md(res, path):
    L = ["# PEFT check: `convert --to peft` + PEFT merge vs `expertui fuse`", "",
         "Generated by `benches/osd_quality/peft_check.py`. For each trained adapter and",
         "compression, the same `.expert` is (a) exported with `convert --to peft`, loaded",
         "with `PeftModel.from_pretrained(base, dir)` and `merge_and_unload()`, and (b)",
         "merged by `expertui fuse --base model.safetensors`. Per target tensor:",
         "max |W_peft − W_fuse|, relative to max |W| (the weight's scale) and to",
         "max |W_peft − W_base| (the delta's scale). DoRA is compressed with `--base`",
         "(its merged delta) and exported as a plain LoRA.", "",
         f"- expertui: {res['expertui']} (sha256 {res['expertui_sha256'][:16]}…, built {res['expertui_mtime']}); "
         f"repo HEAD {res['repo_head'][:12]}; run {res['run_at']}",
         f"- versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
         f"- tolerance: max |W_peft − W_fuse| / max |W| ≤ {TOL:g}", f"- **result: {res['verdict']}**", "",
         "## Summary", "",
         "| adapter | compress | PEFT folder | tensors loaded | max abs diff | max rel to weight | max rel to delta | problems |",
         "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in res["cases"]:
        rp = c["rank_pattern"]
        folder = f"r={c['peft_r']}, alpha={c['peft_lora_alpha']}, {len(rp)} in rank_pattern, {'/'.join(c['file_dtypes'])}"
        L.append(f"| {c['adapter']} | {c['method']} {c['dtype']} {('rank ' + str(c['rank'])) if isinstance(c['rank'], int) else c['rank']} "
                 f"(→ rank {c['cli']['rank']}/{c['cli']['relaxed_rank']}, rel_error {c['cli']['rel_error']:.4f}) | "
                 f"{folder} | {c['tensors_matched_in_peft']}/{c['tensors_in_file']} | {c['max_abs_diff']:.2e} | "
                 f"{c['max_rel_to_weight']:.2e} | {max(t['rel_to_delta'] for t in c['tensors']):.2e} | "
                 f"{'; '.join(c['problems']) or 'none'} |")
    for c in res["cases"]:
        L += ["", f"## {c['adapter']}: {c['method']} {c['dtype']} {('rank ' + str(c['rank'])) if isinstance(c['rank'], int) else c['rank']}", "",
              f"`{c['compress_cmd']}`", "",
              "| tensor | max abs diff | max abs W | rel to weight | max abs ΔW | rel to delta |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for t in c["tensors"]:
            L.append(f"| {t['tensor']} | {t['max_abs_diff']:.2e} | {t['weight_max_abs']:.3f} | "
                     f"{t['rel_to_weight']:.2e} | {t['delta_max_abs']:.2e} | {t['rel_to_delta']:.2e} |")
    L.append("")
    open(path, "w").write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep-work")
    ap.add_argument("--out", default=os.path.join(common.HERE, "results"))
    args = ap.parse_args()
    common.set_threads()
    import hashlib
    from safetensors.torch import load_file
    base_file = common.base_weights_file()
    base_sd = load_file(base_file)
    work = args.keep_work or tempfile.mkdtemp(prefix="peft_check_")
    os.makedirs(work, exist_ok=True)
    exe = cli()
    res = {"expertui": os.path.relpath(exe, common.REPO) if exe.startswith(common.REPO) else exe,
           "expertui_sha256": hashlib.sha256(open(exe, "rb").read()).hexdigest(),
           "expertui_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(exe))),
           "repo_head": subprocess.run(["git", "-C", common.REPO, "rev-parse", "HEAD"],
                                       capture_output=True, text=True).stdout.strip(),
           "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "versions": common.versions(), "tolerance": TOL, "cases": []}
    try:
        for kind in ADAPTERS:
            for method, dtype, rank, extra in CASES:
                c = check_case(kind, method, dtype, rank, extra, work, base_file, base_sd)
                res["cases"].append(c)
                print(f"{c['adapter']} {method} {dtype} {c['rank']}: max abs diff {c['max_abs_diff']:.2e}, "
                      f"rel to weight {c['max_rel_to_weight']:.2e}; problems: {c['problems'] or 'none'}",
                      flush=True)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    bad = [c for c in res["cases"] if c["problems"]]
    res["verdict"] = ("PASS: PEFT loads every export and its merge equals fuse's"
                      if not bad else f"FAIL in {len(bad)} case(s): see problems")
    os.makedirs(args.out, exist_ok=True)
    json.dump(res, open(os.path.join(args.out, "peft_check.json"), "w"), indent=1)
    write_md(res, os.path.join(args.out, "peft_check.md"))
    print(res["verdict"])
    print(f"wrote {args.out}/peft_check.md and peft_check.json")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
