#!/usr/bin/env python3
# Joins retort's and PyTorch's GPU step rows (JSONL) into one Markdown table; checks the targets.
"""Compare retort's GPU training steps with PyTorch's (stdlib only).

    python3 bench/compare_gpu.py retort.jsonl torch.jsonl [more.jsonl ...] [--markdown-out PATH]

Reads the JSONL rows both sides write (bench/README.md, "GPU step benchmark"), groups them by
(workload, batch, precision), and takes the median images/s over repeated rows of the same
(engine, variant), e.g. several interleaved invocations of the two benchmarks. Prints a Markdown
table with each retort and torch variant's images/s and the ratio of the best retort variant to
each torch variant, then one line per target of spec/benchmarks.md: met, NOT MET or not measured.
"Torch eager" in the targets is the faster of eager_nchw and eager_cl in that row.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

REQUIRED = ("engine", "variant", "workload", "batch", "precision", "status", "images_per_s")
KNOWN_ORDER = {"retort": ["eager", "graph"],
               "torch": ["eager_nchw", "eager_cl", "compile", "compile_max"]}
TORCH_EAGER = ("eager_nchw", "eager_cl")
TORCH_COMPILE = ("compile", "compile_max")
WORKLOAD_ORDER = ["kd", "resnet56", "wrn_40_2"]
PRECISION_ORDER = ["tf32", "fp32", "bf16"]


def load_rows(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    print("warning: %s:%d: not JSON (%s); skipped" % (path, number, error),
                          file=sys.stderr)
                    continue
                missing = [k for k in REQUIRED if k not in row]
                if missing:
                    print("warning: %s:%d: no %s; skipped" % (path, number, ", ".join(missing)),
                          file=sys.stderr)
                    continue
                rows.append(row)
    return rows


class Cell:
    """Every row of one (workload, batch, precision, engine, variant)."""

    def __init__(self):
        self.rates, self.reasons, self.devices, self.rows = [], [], set(), 0

    def add(self, row):
        self.rows += 1
        self.devices.add(row.get("device") or "?")
        if row["status"] == "ok" and row["images_per_s"] is not None:
            self.rates.append(float(row["images_per_s"]))
        elif row.get("reason"):
            self.reasons.append(row["reason"])

    @property
    def value(self):
        return statistics.median(self.rates) if self.rates else None


def ordered(names, engine):
    known = KNOWN_ORDER[engine] if engine in KNOWN_ORDER else []
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def group_key(key):
    workload, batch, precision = key
    w = WORKLOAD_ORDER.index(workload) if workload in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
    p = PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)
    return (w, workload, int(batch), p, precision)


def collect(rows):
    groups = defaultdict(lambda: defaultdict(Cell))
    variants = defaultdict(set)
    for row in rows:
        key = (row["workload"], row["batch"], row["precision"])
        groups[key][(row["engine"], row["variant"])].add(row)
        variants[row["engine"]].add(row["variant"])
    return groups, variants


def best(cells, engine, names):
    """(images/s, variant) of the fastest measured variant among `names`, or (None, None)."""
    found = [(cells[(engine, n)].value, n) for n in names
             if (engine, n) in cells and cells[(engine, n)].value is not None]
    return max(found) if found else (None, None)


def rate_text(value):
    return "{:,.0f}".format(value)


def table(groups, variants):
    retort = ordered(variants.get("retort", set()), "retort")
    torch = ordered(variants.get("torch", set()), "torch")
    others = sorted(e for e in variants if e not in ("retort", "torch"))
    header = ["workload", "batch", "precision"]
    header += ["retort %s" % v for v in retort] + ["torch %s" % v for v in torch]
    header += ["%s %s" % (e, v) for e in others for v in ordered(variants[e], e)]
    header += ["best retort / torch %s" % v for v in torch]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + " |"]
    notes = []
    for key in sorted(groups, key=group_key):
        cells = groups[key]
        out = [str(key[0]), str(key[1]), str(key[2])]
        columns = [("retort", v) for v in retort] + [("torch", v) for v in torch]
        columns += [(e, v) for e in others for v in ordered(variants[e], e)]
        for engine, variant in columns:
            cell = cells.get((engine, variant))
            if cell is None:
                out.append("-")
            elif cell.value is None:
                out.append("n/a")
                reason = "; ".join(sorted(set(cell.reasons))) or "no ok row"
                note = "%s %s: %s" % (engine, variant, reason)
                if note not in notes:
                    notes.append(note)
            else:
                out.append(rate_text(cell.value))
        top, _ = best(cells, "retort", retort)
        for variant in torch:
            cell = cells.get(("torch", variant))
            if top is None or cell is None or cell.value is None:
                out.append("-")
            else:
                out.append("%.2fx" % (top / cell.value))
        lines.append("| " + " | ".join(out) + " |")
    return lines, notes


def targets(groups):
    """One line per target of spec/benchmarks.md: (status, text)."""
    def ratio_target(name, select, reference, minimum):
        measured, failing, unmeasured = [], [], []
        for key in sorted(groups, key=group_key):
            if not select(key):
                continue
            cells = groups[key]
            top, top_variant = best(cells, "retort", KNOWN_ORDER["retort"] + sorted(
                v for e, v in cells if e == "retort" and v not in KNOWN_ORDER["retort"]))
            ref, ref_variant = best(cells, "torch", reference)
            label = "%s b%s %s" % key
            if top is None or ref is None:
                unmeasured.append(label)
                continue
            ratio = top / ref
            measured.append((ratio, label, top_variant, ref_variant))
            if ratio < minimum:
                failing.append((ratio, label, top_variant, ref_variant))
        if not measured:
            extra = " (rows without both sides: %s)" % ", ".join(unmeasured) if unmeasured else ""
            return "not measured", name + extra
        worst = min(measured)
        detail = "%d row%s, worst %.2fx (%s, retort %s vs torch %s)" % (
            len(measured), "" if len(measured) == 1 else "s", *worst)
        if unmeasured:
            detail += "; not measured: " + ", ".join(unmeasured)
        if failing:
            detail += "; below: " + ", ".join("%s %.2fx" % (f[1], f[0]) for f in failing)
        return ("met" if not failing else "NOT MET"), "%s: %s" % (name, detail)

    def absolute_target(name, workload, batch, minimum):
        key = (workload, batch, "tf32")
        matches = [k for k in groups if (k[0], int(k[1]), k[2]) == key]
        if not matches:
            return "not measured", name
        top, variant = best(groups[matches[0]], "retort", ["eager", "graph"] + sorted(
            v for e, v in groups[matches[0]] if e == "retort"))
        if top is None:
            return "not measured", name
        return ("met" if top >= minimum else "NOT MET",
                "%s: retort %s %s img/s" % (name, variant, rate_text(top)))

    def is_workload(*names):
        return lambda key: key[0] in names

    return [
        ratio_target("never slower than torch eager in any row", lambda key: True,
                     TORCH_EAGER, 1.0),
        ratio_target("resnet56 batch 64-128 >= 2x torch eager",
                     lambda key: key[0] == "resnet56" and 64 <= int(key[1]) <= 128,
                     TORCH_EAGER, 2.0),
        ratio_target("KD step >= 1.3x torch eager", is_workload("kd"), TORCH_EAGER, 1.3),
        ratio_target("KD step >= best torch.compile mode", is_workload("kd"), TORCH_COMPILE, 1.0),
        ratio_target("wrn_40_2 >= 1.3x torch eager", is_workload("wrn_40_2"), TORCH_EAGER, 1.3),
        ratio_target("wrn_40_2 >= best torch.compile mode", is_workload("wrn_40_2"),
                     TORCH_COMPILE, 1.0),
        absolute_target("resnet56 batch 128 >= 50k img/s (tf32)", "resnet56", 128, 50_000),
        absolute_target("KD step batch 64 >= 25k student img/s (tf32)", "kd", 64, 25_000),
    ]


def report(rows):
    groups, variants = collect(rows)
    lines, notes = table(groups, variants)
    devices = sorted({row.get("device") or "?" for row in rows})
    per_cell = defaultdict(list)  # (engine, variant) -> rows in each cell that has it
    for cells in groups.values():
        for engine_variant, cell in cells.items():
            per_cell[engine_variant].append(cell.rows)
    out = ["Device%s: %s" % ("s" if len(devices) > 1 else "", ", ".join(devices)), ""]
    if len(devices) > 1:
        out += ["**Warning: rows from more than one device; a comparison needs one machine.**",
                ""]
    out += lines
    spans = ["%s %s %s" % (e, v, min(n) if min(n) == max(n) else "%d-%d" % (min(n), max(n)))
             for (e, v), n in sorted(per_cell.items())]
    out += ["", "Images/s: the median over the rows of one cell (rows per cell: %s)."
            % ", ".join(spans)]
    if notes:
        out += ["", "n/a:"] + ["- " + n for n in notes]
    out += ["", "Targets (spec/benchmarks.md; torch eager = the faster of eager_nchw and eager_cl, "
                "best torch.compile = the faster of compile and compile_max):"]
    out += ["- **%s** %s" % (status, text) for status, text in targets(groups)]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("jsonl", nargs="+", help="JSONL files from retort's and torch's benchmarks")
    p.add_argument("--markdown-out", metavar="PATH", help="also write the report to PATH")
    args = p.parse_args()
    rows = load_rows(args.jsonl)
    if not rows:
        print("error: no rows in %s" % ", ".join(args.jsonl), file=sys.stderr)
        return 1
    text = report(rows)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
