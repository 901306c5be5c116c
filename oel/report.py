"""The report of OEL runs, drawn after the last round (loop.sh's final step): what evaluate.py wrote in
RUN/round_R/eval_*.jsonl, as a table and the paper's Figure 1, with the statistics behind the intervals.

One run: RUN/report.md (one row per round, with the paired change of the held-out pass rate from round 0 and
from the in-context run, and the run's settings) and RUN/report.png (pass rate, response tokens per turn,
IFEval and the paired differences per round; the in-context curve when there is one). Several runs:
OUT_DIR/compare.md (one row per run, the knobs that differ as columns: the shape of the paper's Table 2)
and OUT_DIR/compare.png. It is run through evaluate.py, whose `--report` hands over to `write_report`:

    python evaluate.py --report runs/demo
    python evaluate.py --report runs/a runs/b --out-dir runs

The intervals and paired tests are oel/stats.py's: evaluate.py's summaries carry Wilson and bootstrap intervals,
the report adds paired differences.
"""

import collections
import glob
import json
import os
import re

from oel import cli, experience, jsonl, stats

COLUMNS = [  # (header, evaluation, metric): the per-round table of one run
    ("held-out pass rate", "id", "pass_rate"),
    ("with knowledge in context", "id_incontext", "pass_rate"),
    ("score", "id", "score"),
    ("tokens/turn", "id", "tokens_per_turn"),
    ("tokens/turn in context", "id_incontext", "tokens_per_turn"),
    ("turns", "id", "turns"),
    ("OOD games pass rate", "ood", "pass_rate"),
    ("IFEval prompt-level strict", "ifeval", "prompt_accuracy"),
]
PAIRED = [("vs round 0", "id", 0), ("vs in context", "id_incontext", None)]  # held-out games paired with these
NOT_KNOBS = ("quiet", "device", "force", "report", "out_dir")  # recorded flags that do not change a result


# ----------------------------------------------------------------------------- the report


def load_run(run):
    """{(round, eval name): {summaries, games: [{game, episode, won}]}} from RUN/round_R/eval_NAME.jsonl."""
    found = {}
    for path in sorted(glob.glob(os.path.join(run, "round_*", "eval_*.jsonl"))):
        match = re.fullmatch(r"round_(\d+)", os.path.basename(os.path.dirname(path)))
        if not match:
            continue
        name = os.path.basename(path)[len("eval_") : -len(".jsonl")]
        records = jsonl.read_jsonl(path)
        summaries = [r for r in records if r.get("kind") == "summary"]
        need = ("prompt_accuracy", "prompt_accuracy_ci") if name.startswith("ifeval") else ("pass_rate", "pass_rate_ci")
        if not summaries or any(k not in s for s in summaries for k in need):
            raise cli.InputError(
                f"{path}: expected a summary record (kind 'summary') with {', '.join(need)}; "
                "rerun the evaluation with --force"
            )
        played = [r for r in records if r.get("kind") == "game"]
        if any(k not in r for r in played for k in ("game", "episode", "won")):
            raise cli.InputError(f"{path}: a game record without game, episode and won; rerun with --force")
        played = [dict(game=r["game"], episode=r["episode"], won=r["won"], board=r.get("board")) for r in played]
        found[(int(match.group(1)), name)] = dict(summaries=summaries, games=played)
    if not found:
        raise cli.InputError(f"{run}: no evaluations found (expected {run}/round_R/eval_*.jsonl)")
    return found


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise cli.InputError(f"{path}: expected a JSON object ({e})")
    if not isinstance(record, dict):
        raise cli.InputError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def run_knobs(run, found):
    """{knob: value} as the run's files record them: RUN/settings.json if there is one, each round's
    distillation flags (RUN/round_R/model/args.json), the knowledge's `source` and `model`
    (RUN/round_R/knowledge.jsonl) and the evaluation settings. Paths inside the run read RUN/round_R,
    so that two runs compare (those of a run folder since moved or copied too: where it was is read off each
    model's recorded --out, RUN/round_R/model); a knob that changed between rounds shows every value."""
    values = collections.defaultdict(set)
    models = [read_json(path) for path in sorted(glob.glob(os.path.join(run, "round_*", "model", "args.json")))]
    was = {m.group(1) for a in models for m in [re.match(r"(.+)/round_\d+/model/?$", str(a.get("out")))] if m}
    prefixes = sorted({run, os.path.normpath(run), os.path.abspath(run), *was}, key=len, reverse=True)

    def add(prefix, record):
        for key, value in record.items():
            if key not in NOT_KNOBS and (value is None or isinstance(value, (str, int, float, bool))):
                value = str(value)
                for p in prefixes:
                    value = value.replace(p, "RUN")
                values[prefix + key].add(re.sub(r"round_\d+", "round_R", value))

    if os.path.isfile(os.path.join(run, "settings.json")):
        add("", read_json(os.path.join(run, "settings.json")))
    for record in models:  # what the defaults became on that machine (max_seq_len, optimizer...), not None
        add("distill.", {**record, **(record.get("resolved") or {})})
    for path in sorted(glob.glob(os.path.join(run, "round_*", "knowledge.jsonl"))):
        add("extract.", {k: v for r in jsonl.read_jsonl(path)[:1] for k, v in r.items() if k in ("source", "model")})
    for (_, name), found_ in found.items():
        add("eval.", found_["summaries"][-1].get("settings") or {})
    return {key: " | ".join(sorted(v)) for key, v in sorted(values.items())}


def paired(found, r):
    """{label: paired_difference or None}: round r's held-out games against round 0's and against the
    in-context run's (θ_(r-1) with the knowledge), matched by (game, episode)."""
    out = {}
    for label, name, round_ in PAIRED:
        before, after = found.get((r if round_ is None else round_, name)), found.get((r, "id"))
        d = (
            stats.paired_difference(before["games"], after["games"])
            if before and after and before is not after
            else None
        )
        out[label] = d if d and d["pairs"] else None
    return out


def cell(summary, key):
    if summary is None or summary.get(key) is None:
        return "-"
    ci = summary.get(key + "_ci")
    return f"{summary[key]:.2f}" + (" [{:.2f}, {:.2f}]".format(*ci) if ci else "")


def paired_cell(d):
    return "-" if d is None else f"{d['diff']:+.2f} [{d['diff_ci'][0]:+.2f}, {d['diff_ci'][1]:+.2f}] p={d['p']:.2f}"


def last(found, r, name):
    return found[(r, name)]["summaries"][-1] if (r, name) in found else None


def round_table(found):
    """The per-round table of one run, paired differences of the held-out pass rate included."""
    rounds = sorted({r for r, _ in found})
    header = [c[0] for c in COLUMNS] + [f"held-out Δ {label} (paired)" for label, _, _ in PAIRED]
    lines = ["| round | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for r in rounds:
        cells = [cell(last(found, r, name), key) for _, name, key in COLUMNS]
        cells += [paired_cell(d) for d in paired(found, r).values()]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    curves = sorted(k for k in found if "_curve" in k[1])
    if curves:
        lines += ["", "In-context curve (held-out pass rate with the snapshot after N trajectories):", ""]
        lines += ["| round | set | knowledge | step | pass rate |", "|---|---|---|---|---|"]
        for r, name in curves:
            lines += [
                f"| {r} | {name} | {s['knowledge_id']} | {s.get('step')} | {cell(s, 'pass_rate')} |"
                for s in found[(r, name)]["summaries"]
            ]
    return "\n".join(lines)


def fraction(k, n):
    return "-" if not n else f"{k}/{n} ({k / n:.0%})"


def records_of(path):
    return jsonl.read_jsonl(path) if os.path.isfile(path) else []


def cut_table(run, found):
    """Per round, what hit a token cap and what was dropped: the held-out replies (the play cap), IFEval's
    answers, the extractor's outputs, the distillation samples, and the knowledge-pool entries dropped as
    empty (a chain that wrote nothing). A reply that hit its cap was cut, or used every token it was allowed."""
    header = ["round", "held-out replies", "IFEval answers", "extractor outputs", "distillation samples"]
    header += ["pool entries dropped as empty"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in sorted({r for r, _ in found}):
        folder = os.path.join(run, f"round_{r}")
        cells = []
        for name in ("id", "ifeval"):
            s = last(found, r, name)
            cells.append("-" if s is None or s.get("cut") is None else f"{s['cut']:.0%}")
        knowledge = records_of(os.path.join(folder, "knowledge.jsonl"))
        outputs = [k["output_cut"] for k in knowledge if k.get("output_cut") is not None]
        metrics = [m for m in records_of(os.path.join(folder, "model.metrics.jsonl")) if "responses" in m]
        pool = [k for k in knowledge if k.get("in_pool")]
        empty = [k for k in pool if not experience.has_text(k.get("knowledge"))]
        cells += [fraction(sum(outputs), len(outputs))]
        cells += [fraction(sum(m["capped"] for m in metrics), sum(m["responses"] for m in metrics))]
        cells += [fraction(len(empty), len(pool))]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def too_few_games(found):
    """A line for a held-out set too small to show any difference, or '' (the exact sign-flip test needs at
    least 6 games that change, all the same way, to reach p < 0.05: 2 / 2^6 = 0.031)."""
    held_out = [found[k]["games"] for k in sorted(found) if k[1] == "id"]
    n = len({g["game"] for g in held_out[0]}) if held_out else 0
    if not held_out or n >= 6:
        return ""
    return (
        f"\n\n**{n} held-out games are too few to measure anything**: no paired difference can reach p < 0.05 "
        "(that takes 6 games changing the same way), and a pass rate's interval spans most of [0, 1]. This run "
        "checks that the loop works end to end; raise N_EVAL to measure."
    )


def shared_boards(run, found):
    """A line saying how many held-out games share a board with a game trained on (the paper's games record
    their board; TextWorld's held-out sets share no game with training by construction), or ''."""
    held = {g["game"]: g["board"] for k in sorted(found) if k[1] == "id" for g in found[k]["games"] if g["board"]}
    if not held:
        return ""
    trained = set()
    for name in ("extraction_trajectories.jsonl", "deployment_trajectories.jsonl"):
        for path in glob.glob(os.path.join(run, "round_*", name)):
            trained |= {r.get("board") for r in jsonl.read_jsonl(path)}
    shared = sum(board in trained for board in held.values())
    return (
        f"\n\nHeld-out games: {len(held)} on {len(set(held.values()))} distinct boards; {shared} of them share a board "
        f"with a game played for training ({len(trained - {None})} distinct training boards)."
    )


def runs_table(runs, founds, knobs):
    """The paper's Table 2 shape: one row per run, the knobs that differ between runs as columns, then the
    last round's held-out pass rate, in context and consolidated, with its paired differences."""
    differ = [k for k in sorted(set().union(*knobs)) if len({kn.get(k, "-") for kn in knobs}) > 1]
    header = ["run", *differ, "rounds", "held-out round 0", "in context (last round)", "consolidated (last round)"]
    header += [f"Δ {label} (paired)" for label, _, _ in PAIRED] + ["OOD games", "IFEval"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for run, found, kn in zip(runs, founds, knobs):
        r = max(r for r, _ in found)
        cells = [os.path.basename(os.path.normpath(run)), *(kn.get(k, "-") for k in differ), str(r)]
        cells += [cell(last(found, 0, "id"), "pass_rate"), cell(last(found, r, "id_incontext"), "pass_rate")]
        cells += [cell(last(found, r, "id"), "pass_rate"), *(paired_cell(d) for d in paired(found, r).values())]
        cells += [cell(last(found, r, "ood"), "pass_rate"), cell(last(found, r, "ifeval"), "prompt_accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missing(run, found):
    """What a run lacks, one line per round: the evaluations (and in rounds >= 1 the knowledge and the model) that
    rounds 0 to the last one started (or ROUNDS in settings.json) should hold. [] when nothing is missing."""
    started = [int(m.group(1)) for d in os.listdir(run) if (m := re.fullmatch(r"round_(\d+)", d))]
    settings = os.path.join(run, "settings.json")
    planned = int(read_json(settings).get("ROUNDS", 0)) if os.path.isfile(settings) else 0
    lines = []
    for r in range(max([planned, *started, *(r for r, _ in found)]) + 1):
        folder = os.path.join(run, f"round_{r}")
        wanted = [f"eval_{name}.jsonl" for name in ("id", "ood", "ifeval")]
        wanted += ["knowledge.jsonl", "model", "eval_id_incontext.jsonl"] if r else []
        lacking = [w for w in wanted if not os.path.exists(os.path.join(folder, w))]
        if lacking:
            lines.append(
                f"round {r}: no {', '.join(lacking)}"
                + (" (the round never ran)" if len(lacking) == len(wanted) else "")
            )
    return lines


def write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # --out-dir may not exist yet
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_report(runs, out_dir=None):
    """One run: RUN/report.md (one row per round) and RUN/report.png (the paper's Figure 1). Several:
    OUT_DIR/compare.md (one row per run, the paper's Table 2) and OUT_DIR/compare.png. Returns the figure."""
    founds = [load_run(run) for run in runs]
    knobs = [run_knobs(run, found) for run, found in zip(runs, founds)]
    intro = (
        "Round 0 is the base model, round r is θ_r after r rounds; 'in context' is the start-of-round policy "
        "θ_(r-1) playing with round r's knowledge (the distillation teacher). 95% intervals in brackets "
        "(resampling whole games); paired differences match the same (game, episode) in both evaluations, "
        "p is the exact sign-flip test over games (McNemar's exact test with one episode a game).\n\n"
    )
    lacking = {run: missing(run, found) for run, found in zip(runs, founds)}
    for run, lines in lacking.items():  # said, on the screen and in the report: never an empty panel instead
        for line in lines:
            print(f"report | {run}: missing {line}")
    said = lambda run: "".join(f"**Missing: {line}.**\n\n" for line in lacking[run])
    if len(runs) == 1:
        table = round_table(founds[0]) + too_few_games(founds[0]) + shared_boards(runs[0], founds[0])
        cuts = cut_table(runs[0], founds[0])
        settings = "\n".join(f"- {k}: {v}" for k, v in knobs[0].items())
        title, base = os.path.basename(os.path.abspath(runs[0])), os.path.join(runs[0], "report")
        write_text(
            base + ".md",
            f"# {title}\n\n{said(runs[0])}{intro}{table}\n\nWhat hit a token cap (held-out replies: MAX_NEW; "
            "IFEval answers: IFEVAL_NEW; extractor outputs: EXTRACT_NEW; distillation samples: MAX_NEW) and what was "
            "dropped:\n\n"
            f"{cuts}\n\nSettings (as recorded; the distillation's defaults as they resolved):\n\n{settings}\n",
        )
        fig = plot_run(founds[0])
    else:
        table = runs_table(runs, founds, knobs)
        base = os.path.join(out_dir or ".", "compare")
        write_text(base + ".md", f"# {len(runs)} runs\n\n{''.join(map(said, runs))}{intro}{table}\n")
        fig = plot_runs(runs, founds)
    fig.savefig(base + ".tmp.png", dpi=110)
    os.replace(base + ".tmp.png", base + ".png")
    print(table)
    return fig


MARKERS, LINES = "osD^v<>p", ["-", "--", ":", "-."]


def offsets(n, width=0.24):
    """x offsets that spread n series around each round so that equal values stay visible side by side."""
    return [0.0] if n == 1 else [width * (k / (n - 1) - 0.5) for k in range(n)]


def errorbars(ax, points, label, k):
    """points [(x, value, 95% interval or None)] as one series with error bars: marker, line and colour k."""
    if points:
        xs, ys = [x for x, _, _ in points], [y for _, y, _ in points]
        low = [max(y - (ci or (y, y))[0], 0) for _, y, ci in points]
        high = [max((ci or (y, y))[1] - y, 0) for _, y, ci in points]
        ax.errorbar(
            xs, ys, yerr=[low, high], marker=MARKERS[k % len(MARKERS)], ls=LINES[k % len(LINES)], color=f"C{k}",
            capsize=3, markersize=6, markeredgecolor="white", label=label,
        )  # fmt: skip


def panel(ax, title, ylabel, rounds, rate=True):
    """Title, axis labels, whole-number round ticks, and the legend under the axes, off the data."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    if rounds:
        ax.set_xticks(rounds)
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    if rate:
        ax.set_ylim(-0.04, 1.04)  # rates on the whole scale, so small changes look small
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def figure(rows, cols, width=4.8, height=4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, list(fig.subplots(rows, cols, squeeze=False).flat)


def plot_run(found):
    """The paper's Figure 1 for one run: pass rate, response length, IFEval and the paired differences
    per round, with 95% intervals; the in-context curve when there is one."""
    rounds = sorted({r for r, _ in found})
    curves = sorted(k for k in found if "_curve" in k[1])
    fig, axes = figure(2, 3 if curves else 2)
    series = lambda name, key, dx: [
        (r + dx, s[key], s.get(key + "_ci"))
        for r in rounds
        for s in [last(found, r, name)]
        if s and s.get(key) is not None
    ]

    def n(name, unit="games"):  # what a series counts, for its label: a reader needs no text to know n
        counts = sorted(
            {s.get("games", s.get("n")) for (_, e), f in found.items() if e == name for s in f["summaries"]}
        )
        return f" (n = {'/'.join(map(str, counts))} {unit})" if counts else ""

    played = [
        ("id", r"$\theta_r$, no knowledge (held-out games)"),
        ("id_incontext", r"$\theta_{r-1}$ + knowledge in context (the teacher)"),
        ("ood", r"$\theta_r$ on OOD games"),
    ]
    for k, ((name, label), dx) in enumerate(zip(played, offsets(3))):
        errorbars(axes[0], series(name, "pass_rate", dx), label + n(name), k)
    panel(axes[0], "Pass rate", "share of games won", rounds)
    for k, ((name, label), dx) in enumerate(zip(played[:2], offsets(2))):
        errorbars(axes[1], series(name, "tokens_per_turn", dx), label + n(name), k)
    caps = {s["settings"].get("max_new_tokens") for f in found.values() for s in f["summaries"] if s.get("settings")}
    for cap in sorted(c for c in caps if c):  # a round whose every reply hit the cap sits on this line
        axes[1].axhline(cap, color="grey", ls=":", lw=1, label=f"the cap: {cap} tokens a reply")
    panel(axes[1], "Response length (reasoning included)", "tokens per turn", rounds, rate=False)
    axes[1].set_ylim(bottom=0)
    errorbars(axes[2], series("ifeval", "prompt_accuracy", 0), r"$\theta_r$ on IFEval" + n("ifeval", "prompts"), 3)
    panel(axes[2], "Instruction following (OOD)", "IFEval prompt-level strict accuracy", rounds)
    labels = {
        "vs round 0": r"minus $\theta_0$ (the base)",
        "vs in context": r"minus $\theta_{r-1}$ + knowledge (the teacher)",
    }
    paired_rounds = [r for r in rounds if any(paired(found, r).values())]
    for k, ((label, _, _), dx) in enumerate(zip(PAIRED, offsets(len(PAIRED)))):
        found_ = [d for r in paired_rounds for d in [paired(found, r)[label]] if d]
        diffs = [(r + dx, d["diff"], d["diff_ci"]) for r in paired_rounds for d in [paired(found, r)[label]] if d]
        games = sorted({d["games"] for d in found_})
        errorbars(axes[3], diffs, labels[label] + (f" (n = {'/'.join(map(str, games))} games)" if games else ""), k + 4)
    axes[3].axhline(0, color="grey", lw=0.8)
    title = (
        "Held-out pass rate, paired on the same games:\n"
        + r"$\theta_r$ minus $\theta_0$, and minus $\theta_{r-1}$ + knowledge"
    )
    panel(axes[3], title, "Δ share of games won", paired_rounds, rate=False)
    if not paired_rounds:  # nothing to pair: say so where the panel would be, never an empty panel
        axes[3].clear()
        axes[3].axis("off")
        axes[3].text(0.5, 0.5, "No paired difference to draw:\nno round >= 1 has a held-out evaluation",
                     ha="center", va="center", transform=axes[3].transAxes)  # fmt: skip
    if curves:
        for k, (r, name) in enumerate(curves):
            steps = [(s.get("step") or 0, s["pass_rate"], s.get("pass_rate_ci")) for s in found[(r, name)]["summaries"]]
            errorbars(axes[4], steps, f"round {r}: " + r"$\theta_{r-1}$ + the chain's knowledge so far", k)
        panel(axes[4], "In-context curve", "share of games won", None)
        axes[4].set_xlabel("trajectories the chain has read")
        axes[5].set_visible(False)
    return fig


def plot_runs(runs, founds):
    """Several runs side by side: held-out pass rate (consolidated and in context) and IFEval per round; one
    legend for the runs, below the panels."""
    fig, axes = figure(1, 3, height=4.2)
    names = [os.path.basename(os.path.normpath(run)) for run in runs]
    rounds = sorted({r for found in founds for r, _ in found})
    panels = [
        ("id", "pass_rate", r"Held-out pass rate, $\theta_r$ (no knowledge)", "share of games won"),
        ("id_incontext", "pass_rate", r"Held-out pass rate, $\theta_{r-1}$ + knowledge", "share of games won"),
        ("ifeval", "prompt_accuracy", "IFEval (OOD)", "prompt-level strict accuracy"),
    ]
    for k, (name, found, dx) in enumerate(zip(names, founds, offsets(len(runs), 0.3))):
        for ax, (set_, key, _, _) in zip(axes, panels):
            points = [(r + dx, s[key], s.get(key + "_ci")) for r in rounds for s in [last(found, r, set_)] if s]
            errorbars(ax, points, name, k)
    for ax, (_, _, title, ylabel) in zip(axes, panels):
        panel(ax, title, ylabel, rounds)
        if ax.get_legend():
            ax.get_legend().remove()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(runs), 4), fontsize=9, frameon=False)
    return fig
