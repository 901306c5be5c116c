"""Break the method on purpose, one change at a time, and see the tests catch each change.

Every entry of MUTANTS is a change a careless contributor could make to the method: the KL's entry for
on-policy pointing at the forward KL, a loss denominator that counts prompt tokens, clipping that never acts,
the oldest knowledge items kept, a held-out seed off by one... Each names the file, the exact text it replaces
(found there once), the new text, and the tests that must fail. The script copies the tracked files to a
scratch folder, checks that the named tests pass on the unchanged code, then applies each change alone, runs
its tests and puts the file back. It prints caught / SURVIVED / ERROR for each and exits 1 unless all are caught.
ERROR is a run that did not get as far as a failing test (an import or collection error): not a catch.

    python tests/mutants.py               # every entry, about 3 minutes on 2 cores
    python tests/mutants.py --only kl     # the entries whose name holds "kl"
    python tests/mutants.py --list        # names, files and tests

After changing the method, run it. A new property of the method gets a test that pins it and an entry here,
seen caught; tests/README.md lists the properties and their tests.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

D, E, C, V = "distill.py", "extract.py", "collect.py", "evaluate.py"
TD, TE, TC, TV = "tests/test_distill.py", "tests/test_extract.py", "tests/test_collect.py", "tests/test_evaluate.py"


def mutant(name, file, old, new, *tests):
    return dict(name=name, file=file, old=old, new=new, tests=list(tests))


MUTANTS = [
    # ------------------------------------------------------------------ distill.py: the loss
    mutant(
        "kl-table-on-policy-forward",
        D,
        'KL = {"on-policy": reverse_kl, "off-policy": forward_kl}',
        'KL = {"on-policy": forward_kl, "off-policy": forward_kl}',
        f"{TD}::test_the_training_path_has_the_direction_its_mode_names",
    ),
    mutant(
        "kl-arguments-swapped",
        D,
        "kl = (p_s * (logp_s - logp_t)).sum(-1)",
        "kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1)",
        f"{TD}::test_each_loss_has_its_direction",
    ),
    mutant(
        "kl-no-temperature-on-teacher",
        D,
        "logp_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)",
        "logp_t = F.log_softmax(teacher_logits.to(dtype), dim=-1)",
        f"{TD}::test_both_losses_match_brute_force",
    ),
    mutant(
        "kl-topk-from-teacher",
        D,
        "index = logp_s.detach().topk(topk, dim=-1).indices",
        "index = logp_t.detach().topk(topk, dim=-1).indices",
        f"{TD}::test_both_losses_match_brute_force",
    ),
    mutant(
        "denominator-counts-prompt-tokens",
        D,
        "n_total, sums = sum(len(r) for r in responses),",
        'n_total, sums = sum(len(p["student_ids"]) for p in pairs),',
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "topk-not-passed-in-main",
        D,
        "temperature=args.temperature, topk=args.loss_topk,",
        "temperature=args.temperature, topk=0,",
        f"{TD}::test_end_to_end_on_policy_frozen",
    ),
    # ------------------------------------------------------------------ distill.py: the loop
    mutant(
        "clip-never-acts",
        D,
        "clip_grad_norm_(student.parameters(), args.clip)",
        "clip_grad_norm_(student.parameters(), max(args.clip, 1.0))",
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "non-finite-step-not-skipped",
        D,
        "if torch.isfinite(grad_norm):\n            optimizer.step()",
        "if True:\n            optimizer.step()",
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "sampling-without-temperature",
        D,
        "args.max_new_tokens, args.temperature, 1.0, 0",
        "args.max_new_tokens, 1.0, 1.0, 0",
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "one-pool-entry-per-batch",
        D,
        "knowledge = [rng.choice(pool) for _ in batch]",
        "knowledge = [rng.choice(pool)] * len(batch)",
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "live-teacher-under-frozen",
        D,
        'teacher = student if args.teacher == "live" else make_teacher(student)',
        "teacher = student",
        f"{TD}::test_end_to_end_on_policy_frozen",
    ),
    mutant(
        "student-samples-with-the-knowledge",
        D,
        '(student, student_texts) if args.mode == "on-policy"',
        '(student, teacher_texts) if args.mode == "on-policy"',
        f"{TD}::test_end_to_end_on_policy_frozen",
    ),
    mutant(
        "capped-counted-backwards",
        D,
        "capped=sum(r[-1] not in eos for r in responses)",
        "capped=sum(r[-1] in eos for r in responses)",
        f"{TD}::test_what_main_does_at_each_step",
    ),
    mutant(
        "restart-appends-to-old-metrics",
        D,
        "        jsonl.write_jsonl(self.path, [])",
        "        pass",
        f"{TD}::test_a_restarted_run_starts_its_metrics_afresh",
    ),
    # ------------------------------------------------------------------ extract.py
    mutant(
        "budget-drops-the-newest-items",
        E,
        "while start < len(items) and count_tokens(render_knowledge(items[start:])) > max_tokens:\n"
        "        start += 1\n    return items[start:]",
        "end = len(items)\n    while end > 0 and count_tokens(render_knowledge(items[:end])) > max_tokens:\n"
        "        end -= 1\n    return items[:end]",
        f"{TE}::test_accumulation_appends_dedups_and_drops_oldest_whole_items",
    ),
    mutant(
        "dedup-case-sensitive",
        E,
        "if item.lower() not in known and len(fresh) < max_new:",
        "if item not in known and len(fresh) < max_new:",
        f"{TE}::test_accumulation_appends_dedups_and_drops_oldest_whole_items",
    ),
    mutant(
        "chains-see-chain-0s-knowledge",
        E,
        "extraction_messages(t, items, args, games.description(family))",
        "extraction_messages(t, chains[0], args, games.description(family))",
        f"{TE}::test_chains_differ_only_by_randomness",
        f"{TE}::test_slice_chains_read_disjoint_trajectories",
    ),
    mutant(
        "slice-chains-read-the-same-trajectories",
        E,
        "plan = [list(range(c, n - n % chains, chains)) for c in range(chains)]",
        "plan = [list(range(0, n - n % chains, chains)) for c in range(chains)]",
        f"{TE}::test_slice_chains_read_disjoint_trajectories",
    ),
    mutant(
        "items-read-from-the-reasoning",
        E,
        "    _, answer = lm.split_thinking(output)\n    if prompt_version",
        "    answer = output\n    if prompt_version",
        f"{TE}::test_parse_items",
        f"{TE}::test_thinking_extraction_keeps_the_items_after_think",
    ),
    # ------------------------------------------------------------------ collect.py and play
    mutant(
        "one-turn-too-many",
        "oel/play.py",
        "    for t in range(max_turns):",
        "    for t in range(max_turns + 1):",
        "tests/test_play.py",
        TC,
    ),
    mutant(
        "knowledge-appended-after-the-turn",
        "oel/experience.py",
        'messages[-1]["content"] = KNOWLEDGE_BLOCK.format(knowledge=knowledge.strip()) + messages[-1]["content"]',
        'messages[-1]["content"] = messages[-1]["content"] + KNOWLEDGE_BLOCK.format(knowledge=knowledge.strip())',
        "tests/test_play.py::test_knowledge_is_inserted_the_same_way_everywhere",
    ),
    mutant(
        "collect-plays-without-its-knowledge",
        C,
        "knowledge=knowledge, quiet=args.quiet",
        "knowledge=None, quiet=args.quiet",
        f"{TC}::test_collect_end_to_end",
    ),
    mutant(
        "first-bracketed-command",
        "oel/textworld_games.py",
        "text = brackets[-1] if brackets else answer.strip()",
        "text = brackets[0] if brackets else answer.strip()",
        "tests/test_play.py::test_parse_command",
    ),
    mutant(
        "arena-first-move",
        "oel/arena_games.py",
        'return answer, found[-1], "ok", True',
        'return answer, found[0], "ok", True',
        "tests/test_arena_games.py",
    ),
    mutant(
        "log-keeps-the-oldest-turns",
        "oel/textworld_games.py",
        "shown = history[-max_turns:] if max_turns else history",
        "shown = history[:max_turns] if max_turns else history",
        "tests/test_play.py::test_render_log_drops_oldest_turns",
    ),
    # ------------------------------------------------------------------ held-out sets and seeds
    mutant(
        "textworld-train-seeds-overlap-deploy",
        "oel/textworld_games.py",
        'SPLIT_OFFSET = {"extract": 0, "deploy": 5_000}',
        'SPLIT_OFFSET = {"extract": 0, "deploy": 4_999}',
        "tests/test_games.py::test_seed_ranges_never_collide",
    ),
    mutant(
        "arena-eval-seed-off-by-one",
        "oel/arena_games.py",
        "yield 468460046 + 1000 * k",
        "yield 468460046 + 1000 * (k + 1)",
        "tests/test_arena_games.py",
        "tests/test_run_folder.py::test_the_paper_game_settings_hold_the_authors_values",
    ),
    mutant(
        "arena-training-keeps-held-out-boards",
        "oel/arena_games.py",
        "return int(hashlib.sha256(board.encode()).hexdigest()[:8], 16) / 16**8 < HELD_OUT_SHARE",
        "return False",
        "tests/test_arena_games.py::test_the_disjoint_split_holds_out_boards_and_the_paper_split_does_not",
    ),
    # ------------------------------------------------------------------ evaluate.py and the statistics
    mutant(
        "ifeval-checks-the-reasoning-too",
        V,
        "strict, loose = ifeval.check(p, answer)",
        "strict, loose = ifeval.check(p, response)",
        f"{TV}::test_ifeval_thinking_off_with_the_authors_sampling_whatever_thinking_says",
    ),
    mutant(
        "pass-rate-over-games-not-episodes",
        V,
        "m = dict(n=n, games=len(games_), won=won, pass_rate=won / n)",
        "m = dict(n=n, games=len(games_), won=won, pass_rate=won / len(games_))",
        f"{TV}::test_game_metrics_by_hand",
    ),
    mutant(
        "wilson-z-1",
        "oel/stats.py",
        "def wilson(successes, n, z=1.96):",
        "def wilson(successes, n, z=1.0):",
        "tests/test_report.py::test_wilson_interval_by_hand",
    ),
    # ------------------------------------------------------------------ shared plumbing
    mutant(
        "response-past-the-first-eos",
        "oel/lm.py",
        "            return row[: n + 1]\n    return row",
        "            return row\n    return row",
        "tests/test_lm.py::test_cut_at_eos",
        "tests/test_lm.py::test_generation_stops_at_the_second_eos",
    ),
    mutant(
        "lock-not-taken",
        "oel/runfolder.py",
        "        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "        pass",
        "tests/test_run_folder.py::test_hold_run_lock_in_process_names_the_holder",
    ),
    mutant(
        "held-out-trajectories-trained-on",
        "oel/rollouts.py",
        'HELD_OUT = ("id", "ood")',
        "HELD_OUT = ()",
        f"{TD}::test_held_out_trajectories_are_never_trained_on",
    ),
    mutant(
        "a-refused-move-counted-valid",
        "oel/play.py",
        "valid=valid and ep.refusal is None,",
        "valid=valid,",
        "tests/test_arena_games.py::test_frozenlake_win_hole_and_walls",
    ),
    mutant(
        "two-models-share-a-metrics-file",
        D,
        'return os.path.normpath(out) + ".metrics.jsonl"',
        'return os.path.join(os.path.dirname(os.path.normpath(out)), "distill_metrics.jsonl")',
        f"{TD}::test_two_trainings_in_one_folder_keep_their_own_metrics",
    ),
    mutant(
        "empty-pool-entry-kept",
        "oel/experience.py",
        "return [(kid, text) for _, kid, text in pool if has_text(text)]",
        "return [(kid, text) for _, kid, text in pool]",
        f"{TD}::test_an_empty_pool_entry_is_dropped_and_said",
    ),
    # ------------------------------------------------------------------ oel/prefix.py: a shared prefix run once
    mutant(
        "prefix-positions-restart-after-it",
        "oel/prefix.py",
        "return model.model(input_ids=ids.to(device), **options).last_hidden_state",
        "return model.model(input_ids=ids.to(device), position_ids=torch.arange(ids.shape[1])[None], **options)"
        ".last_hidden_state",
        "tests/test_prefix.py::test_the_teachers_log_probs_equal_the_plain_forwards",
    ),
    mutant(
        "prefix-cache-written-by-its-suffixes",
        "oel/prefix.py",
        "        layer.update = functools.partial(_attend_after, layer)\n",
        "        pass\n",
        "tests/test_prefix.py::test_the_teachers_log_probs_equal_the_plain_forwards",
    ),
    mutant(
        "prefix-head-positions-counted-with-the-pads",
        "oel/prefix.py",
        "input_ids[row, width - (len(x) - n) :], mask[row, width - (len(x) - n) :] = torch.tensor(x[n:]), 1",
        "input_ids[row, width - (len(x) - n) :], mask[row, n:] = torch.tensor(x[n:]), 1",
        "tests/test_prefix.py::test_sampling_with_a_shared_head_draws_the_same_tokens",
    ),
    mutant(
        "prefix-groups-mix-pool-entries",
        "oel/prefix.py",
        "by_key.setdefault(tuple(s[:end]), []).append(i)",
        "by_key.setdefault(tuple(s[:8]), []).append(i)",
        "tests/test_prefix.py::test_the_teachers_log_probs_equal_the_plain_forwards",
    ),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="run the entries whose name holds this text")
    p.add_argument("--list", action="store_true", help="print the entries and exit")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    return p.parse_args(argv)


def check_entries(mutants, root=ROOT):
    """Every entry's text occurs exactly once in its file (else the change would hit nothing, or the wrong
    place), and the new text differs from the old. Returns the problems, [] when all is well."""
    problems = []
    for m in mutants:
        with open(os.path.join(root, m["file"]), encoding="utf-8") as f:
            count = f.read().count(m["old"])
        if count != 1:
            problems.append(f"{m['name']}: its text occurs {count} times in {m['file']}, expected once")
        if m["old"] == m["new"] or not m["tests"]:
            problems.append(f"{m['name']}: changes nothing, or names no test")
    return problems


def scratch_copy():
    """The project's files as they are in the work tree (tracked, and new ones git does not ignore) in a fresh
    folder."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    folder = tempfile.mkdtemp(prefix="oel-mutants-")
    for path in filter(None, listed.stdout.split("\0")):
        if os.path.isfile(os.path.join(ROOT, path)):
            os.makedirs(os.path.join(folder, os.path.dirname(path)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, path), os.path.join(folder, path))
    return folder


def run_tests(folder, tests):
    """pytest's exit code on these tests (0 passed, 1 a test failed, anything else: no test got to fail)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OEL_TEST_GAMES=os.path.join(folder, ".test-games"))
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout[-3000:] + done.stderr[-2000:]


def main(args):
    mutants = [m for m in MUTANTS if args.only in m["name"]]
    if args.list:
        for m in mutants:
            print(f"{m['name']:42s} {m['file']:24s} {' '.join(m['tests'])}")
        return 0
    problems = check_entries(mutants)
    if problems or not mutants:
        print("\n".join(problems) or f"no entry's name holds {args.only!r}")
        return 2
    folder = scratch_copy()
    print(f"mutants | {len(mutants)} changes, scratch copy {folder}", flush=True)
    try:
        tests = sorted({t for m in mutants for t in m["tests"]})
        code, out = run_tests(folder, tests)  # the unchanged code passes every test named: a catch means something
        if code != 0:
            print(f"mutants | the unchanged code fails its tests (pytest exit {code}):\n{out}")
            return 2
        results = {}
        for m in mutants:
            path = os.path.join(folder, m["file"])
            with open(path, encoding="utf-8") as f:
                original = f.read()
            t0 = time.time()
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original.replace(m["old"], m["new"]))
                code, out = run_tests(folder, m["tests"])
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            verdict = {0: "SURVIVED", 1: "caught"}.get(code, f"ERROR (pytest exit {code})")
            results[m["name"]] = verdict
            print(f"{verdict:22s} {m['name']:42s} {m['file']:24s} {time.time() - t0:5.0f} s", flush=True)
            if code not in (0, 1):
                print(out)
        caught = sum(v == "caught" for v in results.values())
        print(f"mutants | {caught} of {len(results)} caught")
        return 0 if caught == len(results) else 1
    finally:
        if args.keep:
            print(f"mutants | kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
