#!/usr/bin/env python3
"""Judge compressed experts by end-task accuracy, with the real client.

For each trained adapter in tests/fixtures/trained/ (LoRA and DoRA, r=8) on the
routing test set (tests/fixtures/trained/route-test.jsonl, 300 requests):

Baseline rows (need only Python):
  * base model alone (zero-shot)
  * full adapter, PEFT as trained (float32)
  * the adapter's tensors cast to bf16 / f16 (stored that way, computed in f32)
  * `expertui package` -> `expertui convert --to peft` -> PEFT  (export path check)
  * `expertui package` -> `expertui fuse --base` -> load_state_dict (fuse path check)

Compressed rows (need `expertui osd compress --max-bytes`):
  reference size = file bytes of `osd compress --method lora --dtype f32`
  (the adapter as-is); for budgets ½, ¼, ⅛ of it, every method × dtype forced
  and the automatic pick (no --method / --dtype): compress, then judge it with
  PEFT itself: `convert --to peft` + `PeftModel.from_pretrained(base, dir)`
  (low-rank methods: lora, truncsvd, osd, magtrunc).  Only when the CLI refuses
  the export (the blends: lowrank-sparse, masked-blend, which have a sparse
  part) is the expert fused into the base weights (`fuse`) and judged that way;
  each row says which path judged it (judged_by).  PEFT-judged rows are also
  fused, as a cross-check of the two paths.  A refused export of a low-rank
  method, or a folder PEFT refuses, is flagged.  DoRA adapters are compressed
  with --base <the base model's model.safetensors> (the merged DoRA delta);
  the exported folder is a plain LoRA of that delta.
  Combos the CLI refuses are recorded as "n/a: <error text>".
  If `osd compress --help` does not offer --max-bytes, the harness stops after
  the baseline rows and says so.

Metrics per row: accuracy (argmax), nll (mean cross-entropy on the test set),
agree (fraction of test predictions equal to the full adapter's), kl (mean
KL(full adapter || row) of the 6-way predictive distributions: the most
sensitive of the four, it moves before accuracy does).

Output: results/accuracy.json and results/accuracy.md.

Usage:
  python evaluate.py [--adapters lora,dora] [--budgets 0.5,0.25,0.125]
                     [--methods lora,truncsvd,magtrunc,osd,lowrank-sparse,masked-blend]
                     [--dtypes f32,bf16,f16] [--baseline-only]
  EXPERTUI=/path/to/expertui overrides the CLI (default: target/release/expertui).
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_METHODS = ["lora", "truncsvd", "magtrunc", "osd", "lowrank-sparse", "masked-blend"]
DEFAULT_DTYPES = ["f32", "bf16", "f16"]
TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
CLI_TIMEOUT = 600


# --------------------------------------------------------------------------
# CLI helpers
# --------------------------------------------------------------------------
_SNAPSHOT = None  # private copy of the binary, so one run uses one build


def expertui_source():
    return os.environ.get("EXPERTUI") or os.path.join(
        common.REPO, "target", "release", "expertui")


def expertui_path():
    return _SNAPSHOT or expertui_source()


def snapshot_cli(work_root):
    """Copy the binary into the work folder: it may be rebuilt during the run."""
    global _SNAPSHOT
    src = expertui_source()
    if os.path.isfile(src):
        dst = os.path.join(work_root, "expertui")
        shutil.copy2(src, dst)
        _SNAPSHOT = dst


def run_cli(args):
    """Run expertui; returns (ok, parsed JSON or None, error text)."""
    ok, parsed, err, _ = run_cli_rc(args)
    return ok, parsed, err


def run_cli_rc(args):
    """Run expertui; returns (ok, parsed JSON or None, error text, exit code)."""
    cmd = [expertui_path(), "--headless"] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    except FileNotFoundError as e:
        return False, None, f"cannot run {cmd[0]}: {e}", None
    except subprocess.TimeoutExpired:
        return False, None, f"timed out after {CLI_TIMEOUT}s: {' '.join(cmd)}", None
    parsed = parse_json(p.stdout)
    if p.returncode != 0:
        err = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}")
        if "error:" in err:   # skip notes / warnings printed before the error
            err = err[err.rindex("error:"):]
        if parsed and isinstance(parsed, dict) and "error" in parsed:
            err = str(parsed["error"])
        return False, parsed, one_line(err), p.returncode
    return True, parsed, "", 0


def parse_json(text):
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):  # last JSON line wins
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def one_line(text, limit=300):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def cli_help(args):
    try:
        p = subprocess.run([expertui_path(), "--headless"] + args + ["--help"],
                           capture_output=True, text=True, timeout=60)
        return p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<no help: {e}>"


def cli_identity(path):
    """sha256 and mtime of the binary: the CLI is a moving target."""
    import hashlib
    try:
        h = hashlib.sha256(open(path, "rb").read()).hexdigest()
        mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(path)))
        return {"sha256": h, "mtime": mtime}
    except OSError as e:
        return {"error": str(e)}


def repo_head():
    try:
        return subprocess.run(["git", "-C", common.REPO, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cli_version():
    try:
        p = subprocess.run([expertui_path(), "--version"], capture_output=True,
                           text=True, timeout=60)
        return p.stdout.strip() or p.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<unavailable: {e}>"


# --------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------
class Judge:
    def __init__(self, rows):
        self.rows = rows
        self.tok, self.base = common.load_base()
        self.base_sd = {k: v.clone() for k, v in self.base.state_dict().items()}
        self.y = torch.tensor([common.LABELS.index(r["label"]) for r in rows])
        self.reference_pred = None
        self.reference_logp = None

    def fresh_base(self):
        return copy.deepcopy(self.base)

    def score(self, model):
        lg = common.predict(model, self.tok, self.rows)
        pred = lg.argmax(-1)
        out = {"accuracy": (pred == self.y).float().mean().item(),
               "nll": F.cross_entropy(lg, self.y).item()}
        if self.reference_pred is not None:
            out["agree"] = (pred == self.reference_pred).float().mean().item()
            logp = F.log_softmax(lg, -1)
            out["kl"] = (self.reference_logp.exp() * (self.reference_logp - logp)).sum(-1).mean().item()
        return out, lg

    def set_reference(self, lg):
        self.reference_pred = lg.argmax(-1)
        self.reference_logp = F.log_softmax(lg, -1)

    def peft_folder(self, folder):
        from peft import PeftModel
        model = PeftModel.from_pretrained(self.fresh_base(), folder)
        for n, p in model.named_parameters():   # compute in f32 always
            if p.dtype != torch.float32:
                p.data = p.data.float()
        return model

    def merged_file(self, path):
        """Base model with tensors from a fused safetensors file loaded over it."""
        from safetensors.torch import load_file
        sd = load_file(path)
        own = self.base.state_dict()
        fixed = {}
        for k, v in sd.items():
            for cand in (k, k.removeprefix("bert."), k.removeprefix("model."),
                         k.removeprefix("base_model.model.")):
                if cand in own:
                    fixed[cand] = v.float()
                    break
        if not fixed:
            raise RuntimeError(f"no tensor of {path} matches the base model's names "
                               f"(first keys: {list(sd)[:3]})")
        changed = sum(1 for k, v in fixed.items()
                      if not torch.equal(v, self.base_sd[k].float()))
        model = self.fresh_base()
        model.load_state_dict(fixed, strict=False)
        return model, {"tensors_loaded": len(fixed), "tensors_changed": changed}


def cast_adapter(src, dst, dtype):
    """Copy a PEFT folder with its tensors stored as `dtype`; returns file bytes."""
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "adapter_config.json"), dst)
    sd = load_file(os.path.join(src, "adapter_model.safetensors"))
    sd = {k: v.to(TORCH_DTYPES[dtype]).contiguous() for k, v in sd.items()}
    out = os.path.join(dst, "adapter_model.safetensors")
    save_file(sd, out, metadata={"format": "pt"})
    return os.path.getsize(out)


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------
def row(adapter, kind, **kw):
    r = {"adapter": adapter, "row": kind}
    r.update(kw)
    return r


# Methods whose modules are low-rank factors: `convert --to peft` must export
# them (a plain LoRA folder); the blends carry a sparse part and are refused.
LOWRANK_METHODS = {"lora", "truncsvd", "osd", "magtrunc"}
BLEND_METHODS = {"lowrank-sparse", "masked-blend"}


def peft_folder_info(folder):
    cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
    ranks = list((cfg.get("rank_pattern") or {}).values())
    return {"peft_r": cfg.get("r"), "peft_use_dora": cfg.get("use_dora"),
            "peft_rank_pattern_n": len(ranks),
            "peft_adapter_bytes": os.path.getsize(os.path.join(folder, "adapter_model.safetensors"))}


def fuse_and_score(judge, expert, work, base_file):
    """`fuse` into the base weights, load_state_dict; returns (dict, logits or None)."""
    merged = os.path.join(work, "merged.safetensors")
    if os.path.exists(merged):
        os.remove(merged)
    ok, _, ferr = run_cli(["fuse", expert, "--base", base_file, "-o", merged])
    if not ok:
        return {"fuse_error": f"fuse: {ferr}"}, None
    try:
        model, info = judge.merged_file(merged)
    except Exception as e:
        return {"fuse_error": f"fused file unusable: {one_line(str(e))}"}, None
    metrics, lg = judge.score(model)
    return dict(info, **metrics), lg


def try_export_and_score(judge, expert, work, base_file, method):
    """The judge is PEFT: `convert --to peft` + `PeftModel.from_pretrained`.

    Only when the CLI refuses the export (expected for the blends, whose modules
    have a sparse part) is the expert judged through `fuse`.  For PEFT-judged
    rows the fused model is scored too, as a cross-check of the two paths
    (fuse_agree / fuse_max_dlogit: how far apart their predictions are).
    Returns a dict with judged_by = "peft" | "fuse" | "n/a" and the metrics.
    """
    peft_dir = os.path.join(work, "peft")
    shutil.rmtree(peft_dir, ignore_errors=True)
    ok, _, err, rc = run_cli_rc(["convert", expert, "--to", "peft", "-o", peft_dir])
    out = {}
    if ok:
        out.update(peft_folder_info(peft_dir))
        try:
            model = judge.peft_folder(peft_dir)
        except Exception as e:  # PEFT refused what was exported: a real failure
            msg = f"PEFT refused the exported folder: {one_line(str(e))}"
            print(f"    !! {msg}", flush=True)
            out["peft_error"] = msg
            out["flag"] = "PEFT REFUSED EXPORT"
        else:
            metrics, lg = judge.score(model)
            out.update(judged_by="peft", **metrics)
            fm, flg = fuse_and_score(judge, expert, work, base_file)
            if flg is not None:
                out["fuse_agree"] = (flg.argmax(-1) == lg.argmax(-1)).float().mean().item()
                out["fuse_max_dlogit"] = (flg - lg).abs().max().item()
                out["fuse_accuracy"] = fm["accuracy"]
            else:
                out["fuse_error"] = fm.get("fuse_error")
            return out
    else:
        out["convert_refused"] = err
        out["convert_rc"] = rc
        if method in LOWRANK_METHODS:
            out["flag"] = f"convert --to peft refused a {method} expert (exit {rc})"
            print(f"    !! {out['flag']}: {err}", flush=True)
    fm, _ = fuse_and_score(judge, expert, work, base_file)
    if "fuse_error" in fm:
        reasons = "; ".join(x for x in (out.get("peft_error") or out.get("convert_refused"),
                                        fm["fuse_error"]) if x)
        out.update(judged_by="n/a", error=f"n/a: {reasons}")
        return out
    out.update(judged_by="fuse", **fm)
    return out


def baseline_rows(judge, name, adapter_dir, work, base_file, is_dora):
    rows = []
    m, _ = judge.score(judge.base)
    rows.append(row(name, "base model (zero-shot)", **m))
    adapter_bytes = os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors"))
    m, lg = judge.score(judge.peft_folder(adapter_dir))
    judge.set_reference(lg)
    m["agree"], m["kl"] = 1.0, 0.0
    rows.append(row(name, "full adapter (PEFT, f32)", file_bytes=adapter_bytes, **m))
    for dt in ("bf16", "f16"):
        d = os.path.join(work, f"cast-{dt}")
        size = cast_adapter(adapter_dir, d, dt)
        m, _ = judge.score(judge.peft_folder(d))
        rows.append(row(name, f"adapter cast to {dt} (PEFT)", file_bytes=size, dtype=dt, **m))

    # The CLI's own export paths on the uncompressed adapter (harness check).
    expert = os.path.join(work, "packaged.expert")
    ok, info, err = run_cli(["package", adapter_dir, "-o", expert, "--json"])
    if not ok:
        rows.append(row(name, "expertui package", error=f"n/a: {err}"))
        return rows, adapter_bytes
    size = os.path.getsize(expert)
    peft_dir = os.path.join(work, "packaged-peft")
    ok, _, err = run_cli(["convert", expert, "--to", "peft", "-o", peft_dir])
    if ok:
        try:
            m, _ = judge.score(judge.peft_folder(peft_dir))
            rows.append(row(name, "expertui package → convert --to peft", file_bytes=size, **m))
        except Exception as e:
            rows.append(row(name, "expertui package → convert --to peft", file_bytes=size,
                            error=f"n/a: PEFT load failed: {one_line(str(e))}"))
    else:
        rows.append(row(name, "expertui package → convert --to peft", file_bytes=size,
                        error=f"n/a: {err}"))
    merged = os.path.join(work, "packaged-merged.safetensors")
    ok, _, err = run_cli(["fuse", expert, "--base", base_file, "-o", merged])
    if ok:
        try:
            model, info = judge.merged_file(merged)
            m, _ = judge.score(model)
            rows.append(row(name, "expertui package → fuse", file_bytes=size, **info, **m))
        except Exception as e:
            rows.append(row(name, "expertui package → fuse", file_bytes=size,
                            error=f"n/a: {one_line(str(e))}"))
    else:
        rows.append(row(name, "expertui package → fuse", file_bytes=size, error=f"n/a: {err}"))
    return rows, adapter_bytes


def compressed_rows(judge, name, adapter_dir, work, base_file, is_dora, args, adapter_bytes):
    rows = []
    extra = ["--base", base_file] if is_dora else []
    ref = os.path.join(work, "ref.expert")
    ok, info, err = run_cli(["osd", "compress", adapter_dir, "-o", ref,
                             "--max-bytes", str(adapter_bytes * 4),
                             "--method", "lora", "--dtype", "f32", "--json"] + extra)
    if ok and info and "file_bytes" in info:
        ref_bytes = int(info["file_bytes"])
        ref_note = "osd compress --method lora --dtype f32"
    else:
        ref_bytes = adapter_bytes
        ref_note = f"adapter_model.safetensors size (reference compress failed: {err or 'no file_bytes'})"
        print(f"  [{name}] reference size: {ref_note}", flush=True)
    rows.append(row(name, "reference size", file_bytes=ref_bytes, note=ref_note))

    # The adapter's own tensors cast to bf16 / f16 as an expert (no budget): what
    # the "adapter cast" baseline costs in the .expert format, judged like the rest.
    for dt in ("bf16", "f16"):
        expert = os.path.join(work, f"cast-{dt}.expert")
        ok, info, err = run_cli(["osd", "compress", adapter_dir, "-o", expert,
                                 "--method", "lora", "--dtype", dt, "--json"] + extra)
        r = row(name, f"adapter cast to {dt} as an expert (--method lora, no budget)",
                method_asked="lora", dtype_asked=dt)
        if not ok:
            r["error"] = f"n/a: {err}"
        else:
            info = info or {}
            r.update({k: info.get(k) for k in ("file_bytes", "method", "dtype", "rel_error",
                                                "rank", "relaxed_rank", "tensor_bytes")})
            r["cli"] = info
            r.update(try_export_and_score(judge, expert, work, base_file, "lora"))
        rows.append(r)
        print(f"  [{name}] {r['row']}: bytes {r.get('file_bytes')} rel_err {r.get('rel_error')} "
              f"acc {r.get('accuracy', r.get('error'))} [{r.get('judged_by')}]", flush=True)

    combos = [(m, d) for m in args.methods for d in args.dtypes] + [(None, None)]
    for frac in args.budgets:
        budget = int(ref_bytes * frac)
        for method, dtype in combos:
            label = f"{method or 'auto'}/{dtype or 'auto'}"
            expert = os.path.join(work, "c.expert")
            if os.path.exists(expert):
                os.remove(expert)
            cmd = ["osd", "compress", adapter_dir, "-o", expert,
                   "--max-bytes", str(budget), "--json"] + extra
            if method:
                cmd += ["--method", method]
            if dtype:
                cmd += ["--dtype", dtype]
            t0 = time.time()
            ok, info, err = run_cli(cmd)
            r = row(name, "compressed", budget_frac=frac, budget_bytes=budget,
                    method_asked=method or "auto", dtype_asked=dtype or "auto")
            if not ok:
                r["error"] = f"n/a: {err}"
                rows.append(r)
                print(f"  [{name}] {frac:g} {label}: {r['error'][:120]}", flush=True)
                continue
            info = info or {}
            r.update({k: info.get(k) for k in ("file_bytes", "method", "dtype", "rel_error",
                                                "rank", "relaxed_rank", "tensor_bytes")})
            if info.get("skipped"):   # modules the CLI could not compress (e.g. no base tensor)
                r["skipped"] = info["skipped"]
            if r.get("file_bytes") is None and os.path.exists(expert):
                r["file_bytes"] = os.path.getsize(expert)
            disk = os.path.getsize(expert) if os.path.exists(expert) else None
            r["disk_bytes"] = disk
            r["over_budget"] = max(r.get("file_bytes") or 0, disk or 0) > budget
            r["cli"] = info
            r["compress_s"] = round(time.time() - t0, 2)
            r.update(try_export_and_score(judge, expert, work, base_file,
                                          r.get("method") or method))
            rows.append(r)
            print(f"  [{name}] {frac:g} {label}: bytes {r.get('file_bytes')} "
                  f"rel_err {r.get('rel_error')} acc {r.get('accuracy', r.get('error'))} "
                  f"[{r.get('judged_by')}]", flush=True)
    return rows


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def fmt(v, nd=4):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def fmt_kl(v):
    return "" if v is None else f"{v:.2e}"


def write_report(results, path_md):
    L = ["# OSD quality: end-task accuracy of compressed experts", "",
         "Generated by `benches/osd_quality/evaluate.py`. Task: route a request to one",
         "of 6 experts (SQL, JSON, Cypher, TypeScript, web search, general); test set",
         f"`tests/fixtures/trained/route-test.jsonl` ({results['n_test']} requests, phrasings",
         "held out from training). accuracy = argmax; nll = mean cross-entropy;",
         "agree = share of predictions equal to the full adapter's; kl = mean",
         "KL(full adapter ‖ row) of the 6-way predictions.", "",
         f"- expertui: `{results['expertui']}` ({results['expertui_version']}; binary "
         f"sha256 {results['expertui_binary'].get('sha256', '?')[:16]}…, built "
         f"{results['expertui_binary'].get('mtime', '?')}; repo HEAD {results['repo_head'][:12]}; "
         f"run {results['run_at']})",
         f"- status: {results['status']}",
         f"- versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}", ""]
    for name, rows in results["adapters"].items():
        L += [f"## {name}", "",
              "| row | budget | method | dtype | rank | file bytes | rel_error | accuracy | nll | agree | kl | judged by / note |",
              "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            if r["row"] == "compressed":
                label = "compressed"
                budget = f"{r['budget_frac']:g} ({r['budget_bytes']})"
                method = r.get("method") or r["method_asked"]
                if r["method_asked"] == "auto":
                    method = f"auto → {method}" if r.get("method") else "auto"
                dtype = r.get("dtype") or r["dtype_asked"]
                if r["dtype_asked"] == "auto":
                    dtype = f"auto → {dtype}" if r.get("dtype") else "auto"
                rank = ""
                if r.get("rank") is not None:
                    rank = str(r["rank"])
                    if r.get("relaxed_rank") not in (None, r["rank"]):
                        rank += f"→{r['relaxed_rank']}"
            else:
                label, budget, method, dtype = r["row"], "", r.get("method") or "", r.get("dtype", "")
                rank = "" if r.get("rank") is None else str(r["rank"])
            note = r.get("error") or r.get("judged_by") or r.get("note") or ""
            if r.get("judged_by") == "peft":
                note = "PEFT"
                if r.get("peft_rank_pattern_n"):
                    note += f" (r={r.get('peft_r')}, {r['peft_rank_pattern_n']} in rank_pattern)"
                if r.get("fuse_agree") is not None:
                    note += (f"; fuse cross-check agree {r['fuse_agree']:.3f}, "
                             f"max Δlogit {r['fuse_max_dlogit']:.1e}")
                elif r.get("fuse_error"):
                    note += f"; fuse cross-check failed: {r['fuse_error']}"
            elif r.get("judged_by") == "fuse":
                note = "fuse"
                if r.get("tensors_changed") is not None:
                    note += f" ({r['tensors_changed']} tensors changed)"
                if r.get("convert_refused"):
                    note += f"; convert --to peft refused (exit {r.get('convert_rc')})"
            elif r.get("tensors_changed") is not None:
                note = (note or "fuse") + f" ({r['tensors_changed']} tensors changed)"
            if r.get("flag"):
                note = f"**{r['flag']}**; " + note
            if r.get("skipped"):
                note = f"**skipped modules: {len(r['skipped'])}**; " + note
            if r.get("over_budget"):
                note = f"OVER BUDGET ({r.get('disk_bytes')} bytes on disk); " + note
            note = note.replace("|", "\\|")
            L.append(f"| {label} | {budget} | {method} | {dtype} | {rank} | {fmt(r.get('file_bytes'))} | "
                     f"{fmt(r.get('rel_error'))} | {fmt(r.get('accuracy'))} | "
                     f"{fmt(r.get('nll'))} | {fmt(r.get('agree'))} | {fmt_kl(r.get('kl'))} | {note} |")
        L.append("")
    with open(path_md, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapters", default="lora,dora")
    ap.add_argument("--budgets", default="0.5,0.25,0.125")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES))
    ap.add_argument("--baseline-only", action="store_true",
                    help="only the baseline rows, even if the CLI can compress")
    ap.add_argument("--out", default=os.path.join(common.HERE, "results"))
    ap.add_argument("--keep-work", help="keep intermediate files in this folder")
    args = ap.parse_args()
    args.budgets = [float(x) for x in args.budgets.split(",") if x]
    args.methods = [x for x in args.methods.split(",") if x]
    args.dtypes = [x for x in args.dtypes.split(",") if x]
    common.set_threads()

    rows = common.read_jsonl(common.TEST_SET)
    judge = Judge(rows)
    base_file = common.base_weights_file()

    work_root = args.keep_work or tempfile.mkdtemp(prefix="osd_quality_")
    os.makedirs(work_root, exist_ok=True)
    cli = expertui_source()
    snapshot_cli(work_root)
    identity = cli_identity(expertui_path())   # the copy this run uses (copy2 keeps mtime)
    compress_help = cli_help(["osd", "compress"])
    if args.baseline_only:
        status = "baseline only (--baseline-only)"
        can_compress = False
    elif not os.path.exists(cli):
        status = f"baseline only: {cli} does not exist (build it or set EXPERTUI)"
        can_compress = False
    elif "--max-bytes" not in compress_help:
        status = ("baseline only: this expertui's `osd compress --help` has no --max-bytes "
                  "(the budgeted compressor is not built yet)")
        can_compress = False
    else:
        status = "full run"
        can_compress = True
    print(status, flush=True)

    results = {"expertui": os.path.relpath(cli, common.REPO) if cli.startswith(common.REPO) else cli,
               "expertui_version": cli_version() if os.path.exists(expertui_path()) else "absent",
               "expertui_binary": identity, "repo_head": repo_head(),
               "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "status": status, "n_test": len(rows), "versions": common.versions(),
               "budgets": args.budgets, "methods": args.methods, "dtypes": args.dtypes,
               "adapters": {}}
    try:
        for kind in args.adapters.split(","):
            name = f"minilm-route-{kind}-r8"
            adapter_dir = os.path.join(common.TRAINED, name)
            work = os.path.join(work_root, name)
            os.makedirs(work, exist_ok=True)
            is_dora = json.load(open(os.path.join(adapter_dir, "adapter_config.json"))).get("use_dora", False)
            print(f"[{name}] baseline", flush=True)
            judge.reference_pred = judge.reference_logp = None
            res, adapter_bytes = baseline_rows(judge, name, adapter_dir, work, base_file, is_dora)
            for r in res:
                print(f"  {r['row']}: acc {fmt(r.get('accuracy'))} nll {fmt(r.get('nll'))} "
                      f"{r.get('error', '')}", flush=True)
            if can_compress:
                res += compressed_rows(judge, name, adapter_dir, work, base_file, is_dora,
                                       args, adapter_bytes)
            results["adapters"][name] = res
    finally:
        if not args.keep_work:
            shutil.rmtree(work_root, ignore_errors=True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "accuracy.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, os.path.join(args.out, "accuracy.md"))
    print(f"wrote {args.out}/accuracy.json and accuracy.md")
    if not can_compress:
        print(f"NOTE: stopped after the baseline rows: {status}", file=sys.stderr)


if __name__ == "__main__":
    main()
